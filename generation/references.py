"""Image references through IP-Adapter: `--sref` (style), `--cref` / `--oref` (character / object), image
prompts (`--iw`, /blend). Discord-free: the bot turns a member's image into a blob key; this module names the
roles and their weights, loads the adapter into a model's UNet, switches it on and off per call, and turns
reference images into the image embeddings the pipeline takes (cached in the blob store).

The adapter file is loaded twice through `load_ip_adapter`: a *style* copy whose scales touch only the
InstantStyle style layer (the middle transformer of the first up block with attention, as diffusers documents
for SDXL's `up.block_0`), and a *content* copy over every cross-attention layer (character, object, image
prompt). A job uses one content role at most; several images of one role are blended (their embeddings
averaged), which is what /blend asks for.
"""

from __future__ import annotations

import hashlib
import io
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from generation.errors import InvalidRequest, RenderError

if TYPE_CHECKING:
    from PIL import Image

    from storage.blobs import BlobStore

log = logging.getLogger(__name__)

STYLE, CHARACTER, OBJECT, IMAGE = "style", "character", "object", "image"
CONTENT_ROLES = (CHARACTER, OBJECT, IMAGE)
# The flag that names an image of each role, and the flag that weighs it (Midjourney's ranges and defaults).
IMAGE_FLAGS = {"sref": STYLE, "cref": CHARACTER, "oref": OBJECT}
WEIGHT_FLAGS = {"sw": STYLE, "cw": CHARACTER, "ow": OBJECT, "iw": IMAGE}
WEIGHT_RANGES: dict[str, tuple[float, float, float]] = {  # role: (low, high, default)
    STYLE: (0, 1000, 100),
    CHARACTER: (0, 100, 100),
    OBJECT: (0, 1000, 100),
    IMAGE: (0, 3, 1),
}
MAX_IMAGES_PER_ROLE = 5
NOT_CONFIGURED = "Image references are not configured on this server/model."
# A request's references: (role, blob key of the image, adapter scale) in the order given.
ReferenceSet = tuple[tuple[str, str, float], ...]
_EMBED_SUFFIX = ".emb"
_MEMORY_ENTRIES = 2048


def flag_of(role: str) -> str:
    return next((f for f, r in WEIGHT_FLAGS.items() if r == role), role)


def scale_for(role: str, weight: float) -> float:
    """The adapter scale a flag's weight means: --sw / --cw / --ow count in hundredths (100 = 1.0, as
    Midjourney's defaults), --iw is the scale itself."""
    return round(float(weight) if role == IMAGE else float(weight) / 100.0, 4)


def check_weight(role: str, weight: float) -> float:
    low, high, _ = WEIGHT_RANGES[role]
    if not low <= weight <= high:
        raise InvalidRequest(f"Flag `--{flag_of(role)}` takes {low:g} to {high:g}.")
    return float(weight)


def build_references(images: list[tuple[str, str]], weights: dict[str, float]) -> ReferenceSet:
    """(role, blob key) pairs and the weights given by flag role -> the request's ReferenceSet. Raises
    InvalidRequest for a weight without its image, a weight out of range, or two content roles at once."""
    roles = {role for role, _ in images}
    for role, weight in weights.items():
        check_weight(role, weight)
        if role not in roles:
            what = "an image prompt (/blend)" if role == IMAGE else f"`--{_image_flag(role)}`"
            raise InvalidRequest(f"Flag `--{flag_of(role)}` weighs {what}, which this prompt does not have.")
    content = [r for r in CONTENT_ROLES if r in roles]
    if len(content) > 1:
        raise InvalidRequest("Use one of `--cref`, `--oref` or an image prompt per job (a `--sref` may join "
                             "any of them).")
    for role in roles:
        if sum(1 for r, _ in images if r == role) > MAX_IMAGES_PER_ROLE:
            raise InvalidRequest(f"At most {MAX_IMAGES_PER_ROLE} images per reference flag.")
    return tuple((role, key, scale_for(role, weights.get(role, WEIGHT_RANGES[role][2])))
                 for role, key in images)


def _image_flag(role: str) -> str:
    return next((f for f, r in IMAGE_FLAGS.items() if r == role), role)


def describe(references: ReferenceSet) -> str:
    """`--sref 3f2a9c01d4e5 --sw 100`: the references by image hash, for Details and PNG parameters."""
    parts: list[str] = []
    for role in (STYLE, *CONTENT_ROLES):
        keys = [key for r, key, _ in references if r == role]
        if not keys:
            continue
        scale = next(s for r, _, s in references if r == role)
        weight = scale if role == IMAGE else round(scale * 100, 2)
        flag = "image" if role == IMAGE else _image_flag(role)
        parts.append(f"--{flag} {' '.join(k[:12] for k in keys)} --{flag_of(role)} {weight:g}")
    return " ".join(parts)


# ---------------------------------------------------------------------------------------------
# The adapter in a model's UNet
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class AdapterConfig:
    """Where an operator's IP-Adapter lies (`?ip_adapter=<file or folder>&image_encoder=<folder>`)."""

    weights: Path
    encoder: Path

    @classmethod
    def parse(cls, ip_adapter: str, image_encoder: str | None) -> AdapterConfig:
        """ValueError naming the bad path (a model option is checked at start, not at the first job)."""
        path = Path(ip_adapter).expanduser()
        if path.is_dir():
            files = sorted([*path.glob("*.safetensors"), *path.glob("*.bin")])
            if len(files) != 1:
                raise ValueError(f"ip_adapter folder {ip_adapter!r} must hold one .safetensors or .bin "
                                 "file")
            path = files[0]
        if not path.is_file():
            raise ValueError(f"ip_adapter {ip_adapter!r} is not a file or folder")
        encoder = Path(image_encoder).expanduser() if image_encoder else path.parent / "image_encoder"
        if not (encoder / "config.json").is_file():
            raise ValueError(f"image_encoder {str(encoder)!r} is not a CLIP vision model folder "
                             "(give `image_encoder=<folder>`)")
        return cls(path, encoder)


@dataclass
class AdapterState:
    """One model's loaded IP-Adapter: the UNet's attention processors and image projection with and without
    it, so a call switches between them instead of loading again, and the image encoder."""

    encoder: Any
    processor: Any  # CLIPImageProcessor
    encoder_id: str
    plain_procs: dict[str, Any]
    ip_procs: dict[str, Any]
    ip_proj: Any
    style_layers: dict[str, Any]
    embed_dim: int
    active: bool = True
    _embeds: dict[str, Any] = field(default_factory=dict)


def load_adapter(pipe: Any, config: AdapterConfig, dtype: Any, device: str) -> AdapterState:
    """Load `config` into `pipe`'s UNet (two copies: style and content) and its image encoder."""
    from transformers import CLIPImageProcessor, CLIPVisionModelWithProjection

    unet = pipe.unet
    plain = dict(unet.attn_processors)
    try:
        encoder: Any = CLIPVisionModelWithProjection.from_pretrained(str(config.encoder), dtype=dtype,
                                                                     local_files_only=True)
        encoder = encoder.to(device).eval()
        pipe.load_ip_adapter([str(config.weights.parent)] * 2, subfolder=["", ""],
                             weight_name=[config.weights.name] * 2, image_encoder_folder=None,
                             local_files_only=True)
    except (OSError, ValueError, KeyError, RuntimeError) as exc:
        unet.set_attn_processor(plain)
        unet.encoder_hid_proj = None
        unet.config.encoder_hid_dim_type = None
        raise RenderError(f"Could not load the IP-Adapter: {str(exc).splitlines()[0][:200]}") from exc
    size = int(encoder.config.image_size)
    digest = hashlib.sha256((config.encoder / "config.json").read_bytes())
    for weights in sorted(config.encoder.glob("*.safetensors")):
        digest.update(f"{weights.name}:{weights.stat().st_size}:{weights.stat().st_mtime_ns}".encode())
    return AdapterState(
        encoder=encoder,
        processor=CLIPImageProcessor(size={"shortest_edge": size}, crop_size={"height": size, "width": size}),
        encoder_id=digest.hexdigest()[:16],
        plain_procs=plain,
        ip_procs=dict(unet.attn_processors),
        ip_proj=unet.encoder_hid_proj,
        style_layers=style_scales(unet),
        embed_dim=int(encoder.config.projection_dim),
    )


def style_scales(unet: Any) -> dict[str, Any]:
    """InstantStyle's style-only layer for this UNet: the middle transformer of the first up block with
    cross-attention (SDXL: `{"up": {"block_0": [0, 1, 0]}}`, diffusers' documented example)."""
    for index, block in enumerate(unet.up_blocks):
        attentions = getattr(block, "attentions", None)
        if attentions:
            layers = [0.0] * len(attentions)
            layers[len(attentions) // 2] = 1.0
            return {"up": {f"block_{index}": layers}}
    return {}


def switch(pipe: Any, state: AdapterState | None, references: ReferenceSet) -> None:
    """Make the UNet of `pipe` render `references` (none: exactly as without an adapter)."""
    if state is None:
        return
    unet = pipe.unet
    if not references:
        if state.active:
            # The UNet without the adapter's processors and projection: a plain call needs no image embeds
            # and runs the very attention it ran before the adapter was loaded.
            unet.set_attn_processor(dict(state.plain_procs))
            unet.encoder_hid_proj = None
            unet.config.encoder_hid_dim_type = None
            state.active = False
        return
    if not state.active:
        unet.set_attn_processor(dict(state.ip_procs))
        unet.encoder_hid_proj = state.ip_proj
        unet.config.encoder_hid_dim_type = "ip_image_proj"
        state.active = True
    style = next((s for r, _, s in references if r == STYLE), 0.0)
    content = next((s for r, _, s in references if r != STYLE), 0.0)
    style_config: Any = _scaled(state.style_layers, style) if style else 0.0
    pipe.set_ip_adapter_scale([style_config, content])


def _scaled(config: dict[str, Any], scale: float) -> dict[str, Any]:
    return {side: {block: [v * scale for v in layers] for block, layers in blocks.items()}
            for side, blocks in config.items()}


class EmbeddingCache:
    """Image embeddings by (image blob key, encoder): in memory and, with a blob store, on disk, so an
    image referenced again (or by another job, or after a restart) is not encoded again."""

    def __init__(self, blobs: BlobStore | None) -> None:
        self.blobs = blobs
        self.encoded = 0  # images run through an encoder (what the cache saves)

    def key(self, image_key: str, encoder_id: str) -> str:
        return hashlib.sha256(f"{image_key}|{encoder_id}".encode()).hexdigest() + _EMBED_SUFFIX

    def embed(self, state: AdapterState, image_key: str) -> Any:
        """The (1, dim) image embedding of blob `image_key` under `state`'s encoder."""
        import torch
        from safetensors.torch import load, save

        key = self.key(image_key, state.encoder_id)
        cached = state._embeds.get(key)
        if cached is not None:
            return cached
        if self.blobs is not None and self.blobs.exists(key):
            tensor = load(self.blobs.read(key))["embeds"]
        else:
            image = self._image(image_key)
            pixels = state.processor(images=image, return_tensors="pt").pixel_values
            with torch.inference_mode():
                tensor = state.encoder(pixels.to(state.encoder.device, state.encoder.dtype)).image_embeds
            tensor = tensor.detach().to("cpu", torch.float32).contiguous()
            self.encoded += 1
            if self.blobs is not None:
                self.blobs.put_as(key, save({"embeds": tensor}))
        if len(state._embeds) >= _MEMORY_ENTRIES:
            state._embeds.clear()  # a few KB each; the blob store keeps them all
        state._embeds[key] = tensor
        return tensor

    def _image(self, image_key: str) -> Image.Image:
        if self.blobs is None:
            raise RenderError("Reference images need the blob store.")
        try:
            return self.blobs.open_image(image_key).convert("RGB")
        except (FileNotFoundError, OSError, ValueError) as exc:
            raise RenderError("A reference image of this job is no longer available.") from exc


def call_embeds(state: AdapterState, cache: EmbeddingCache, references: ReferenceSet, rows: int,
                cfg: bool, dtype: Any, device: Any) -> list[Any]:
    """`ip_adapter_image_embeds` for a call of `rows` images: per adapter copy (style, content) the blend
    (mean) of its images' embeddings for every row, after zeros for the unconditional half under CFG
    (what diffusers' encode_image gives a plain IP-Adapter). A copy without images gets zeros and scale 0."""
    import torch

    out = []
    for roles in ((STYLE,), CONTENT_ROLES):
        keys = [key for r, key, _ in references if r in roles]
        if keys:
            blend = torch.stack([cache.embed(state, k)[0] for k in keys]).mean(dim=0)
        else:
            blend = torch.zeros(state.embed_dim)
        rows_embeds = blend.expand(rows, 1, -1)
        if cfg:
            rows_embeds = torch.cat([torch.zeros_like(rows_embeds), rows_embeds])
        out.append(rows_embeds.to(device=device, dtype=dtype))
    return out


def encode_png(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()
