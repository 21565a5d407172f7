"""One typed settings object for the operator, read from the environment and `.env` (DESIGN §3): the
process configuration. Per-guild and per-member settings are another thing: they live in SQLite.

Secrets only come from here; the token is a SecretStr so it never appears in logs or reprs.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import AliasChoices, Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict


class Settings(BaseSettings):
    model_config = SettingsConfigDict(
        env_file=".env", env_file_encoding="utf-8", extra="ignore", env_ignore_empty=True
    )

    discord_token: SecretStr | None = Field(
        default=None, validation_alias=AliasChoices("DISCORD_TOKEN", "ATELIER_DISCORD_TOKEN")
    )
    # Hub id, local diffusers folder, single .safetensors file, or `tiny` / `tiny-xl` (offline).
    model: str = Field(default="tiny", validation_alias="ATELIER_MODEL")
    # Several named models: `name=source,name2=source2`; the first is the default. Overrides MODEL.
    models: str = Field(default="", validation_alias="ATELIER_MODELS")
    data_dir: Path = Field(default=Path("./data"), validation_alias="ATELIER_DATA_DIR")
    device: Literal["auto", "cuda", "mps", "cpu"] = Field(default="auto", validation_alias="ATELIER_DEVICE")
    # auto: bf16 on CUDA cards that run it natively (compute capability >= 8.0), else fp16; fp32 on CPU.
    dtype: Literal["auto", "float16", "bfloat16", "float32"] = Field(
        default="auto", validation_alias="ATELIER_DTYPE"
    )
    # torch.compile the denoiser; the bot then renders every size and batch it serves before taking work.
    compile: bool = Field(default=False, validation_alias="ATELIER_COMPILE")
    # With compile, LoRAs are hotswapped into slots padded to this rank (a compiled UNet keeps its graph
    # when they change); a LoRA of a higher rank is refused at render. Without compile it is unused.
    lora_max_rank: int = Field(default=64, ge=1, le=1024, validation_alias="ATELIER_LORA_MAX_RANK")
    # Small cards: keep weights in host RAM and move them to the GPU per model (`model`, a little slower)
    # or per layer (`sequential`, much slower, fits in ~3 GB). Needs CUDA: refused at start elsewhere.
    offload: Literal["none", "model", "sequential"] = Field(
        default="none", validation_alias="ATELIER_OFFLOAD"
    )
    # Least seconds between two live previews of a render: each one syncs the GPU, and the bot edits a job's
    # message at most once per 1.5 s (bot.delivery.EDIT_INTERVAL_S): more would be made and never shown.
    # 0 previews every step.
    preview_interval: float = Field(default=1.5, ge=0.0, validation_alias="ATELIER_PREVIEW_INTERVAL")
    # torch's intra-op threads on the render thread; unset: torch's default (every core). Leaving the event
    # loop a core measured slower end to end (bench/e2e.py --settings default,spare): the loop needs little.
    torch_threads: int | None = Field(default=None, ge=1, validation_alias="ATELIER_TORCH_THREADS")
    max_loaded_models: int = Field(default=2, ge=1, validation_alias="ATELIER_MAX_LOADED_MODELS")
    # The tiny model's stand-in NSFW checker flags an image when this share of its pixels is skin-toned
    # (real models bring their own checker). 0 flags everything: useful to see the NSFW path offline.
    tiny_nsfw_threshold: float = Field(
        default=0.4, ge=0.0, le=1.0, validation_alias="ATELIER_TINY_NSFW_THRESHOLD"
    )
    # A standalone image checker (diffusers' StableDiffusionSafetyChecker: a hub id such as
    # CompVis/stable-diffusion-safety-checker, or a folder) for every model that has none of its own.
    safety_checker: str | None = Field(default=None, validation_alias="ATELIER_SAFETY_CHECKER")
    # The LoRA library (`.safetensors` files, optionally in family subfolders: sd15/, sdxl/, ...);
    # None: <data dir>/loras.
    lora_dir: Path | None = Field(default=None, validation_alias="ATELIER_LORA_DIR")
    # /describe's captioning model: a BLIP or Florence-2 hub id or folder (transformers), or `tiny` /
    # `tiny-florence` (random offline BLIP / Florence-2, for tests and trying it out). Unset: /describe says
    # it is not configured.
    caption_model: str | None = Field(default=None, validation_alias="ATELIER_CAPTION_MODEL")
    max_batch: int = Field(default=4, ge=1, le=16, validation_alias="ATELIER_MAX_BATCH")
    queue_max_per_user: int = Field(default=5, ge=1, validation_alias="ATELIER_QUEUE_MAX_PER_USER")
    queue_max_total: int = Field(default=200, ge=1, validation_alias="ATELIER_QUEUE_MAX_TOTAL")
    dev_guild_id: int | None = Field(default=None, validation_alias="ATELIER_DEV_GUILD_ID")
    discord_api_base: str | None = Field(default=None, validation_alias="ATELIER_DISCORD_API_BASE")
    discord_gateway_url: str | None = Field(default=None, validation_alias="ATELIER_DISCORD_GATEWAY_URL")
    log_level: str = Field(default="INFO", validation_alias="ATELIER_LOG_LEVEL")
    # Slash commands work inside servers only unless this is on. In DMs a job is seen by its owner only,
    # and the operator's rules apply (NSFW refused; a ban in any server the bot is in holds).
    allow_dms: bool = Field(default=False, validation_alias="ATELIER_ALLOW_DMS")
    # Remote workers: `nats://user:pass@host:4222` moves rendering to `atelier worker` processes. A secret
    # (it holds the password). Unset: the bot renders in-process, as always.
    broker_url: SecretStr | None = Field(default=None, validation_alias="ATELIER_BROKER_URL")
    # Every subject, stream and bucket name starts with this (several bots may share one broker).
    broker_prefix: str = Field(default="atelier", validation_alias="ATELIER_BROKER_PREFIX")
    # host:port for Prometheus metrics; unset serves none.
    metrics_addr: str | None = Field(default=None, validation_alias="ATELIER_METRICS_ADDR")
    # The web gallery (web/): host:port to serve it on, inside `atelier run`; unset serves none.
    web_addr: str | None = Field(default=None, validation_alias="ATELIER_WEB_ADDR")
    # Where members reach it (behind a proxy, the outside address): the OAuth2 redirect and cookies use it.
    public_url: str | None = Field(default=None, validation_alias="ATELIER_PUBLIC_URL")
    # Discord OAuth2 client: the id defaults to the application's own; the secret is a secret.
    oauth_client_id: int | None = Field(default=None, validation_alias="ATELIER_OAUTH_CLIENT_ID")
    oauth_client_secret: SecretStr | None = Field(default=None,
                                                  validation_alias="ATELIER_OAUTH_CLIENT_SECRET")
    # Signs session cookies; unset, a random key is made once and kept in <data dir>/web-session.key.
    web_secret: SecretStr | None = Field(default=None, validation_alias="ATELIER_WEB_SECRET")

    def model_sources(self) -> list[tuple[str, str]]:
        """Configured (name, source) pairs, default first."""
        if not self.models.strip():
            return [(_default_name(self.model), self.model)]
        pairs: list[tuple[str, str]] = []
        for item in self.models.split(","):
            item = item.strip()
            if not item:
                continue
            name, sep, source = item.partition("=")
            if not sep or not name.strip() or not source.strip():
                raise ValueError(f"ATELIER_MODELS entry {item!r} must look like name=source")
            pairs.append((name.strip(), source.strip()))
        return pairs

    def token(self) -> str:
        if self.discord_token is None or not self.discord_token.get_secret_value():
            raise SystemExit("DISCORD_TOKEN is not set (put it in the environment or .env)")
        return self.discord_token.get_secret_value()


def _default_name(source: str) -> str:
    if source in ("tiny", "tiny-xl"):
        return source
    return Path(source.rstrip("/")).stem or source
