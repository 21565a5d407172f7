"""Configured models: what each one is (ModelSpec) and its loaded pipelines (ModelRegistry).

Sources: a hub id, a local diffusers folder, a single `.safetensors` checkpoint (needs a local
config folder for its family when offline), or `tiny` / `tiny-xl` / `tiny-<family>` (built offline,
images are noise). The family (generation/families.py) is read from the folder's model_index.json.
Defaults and settings may be given per model with a query string, e.g.
`turbo=stabilityai/sdxl-turbo?steps=4&cfg=0&sampler=euler_a` for turbo / LCM models; every key is in
MODEL_OPTIONS. Well-known names (lightning, turbo, hyper, dmd2, lcm, v-pred) get fitting defaults.
"""

from __future__ import annotations

import gc
import json
import logging
import math
import re
import tempfile
import threading
import traceback
import types
from collections import OrderedDict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Protocol
from urllib.parse import parse_qsl

from generation.errors import ConfigError, InvalidRequest, RenderError
from generation.families import FAMILIES, Family, family_of
from generation.loras import LoraFile, LoraLibrary, LoraSet, adapter_name, load_embedding
from generation.references import (
    NOT_CONFIGURED,
    AdapterConfig,
    AdapterState,
    ReferenceSet,
    load_adapter,
    switch,
)
from generation.safety import SafetyChecker, detach_checker, load_standalone_checker
from generation.samplers import SAMPLERS, normalize_sampler, sampler_label, supports_zero_snr
from generation.tiny import ensure_tiny_model

log = logging.getLogger(__name__)


class _EmptyFp32ListFilter(logging.Filter):
    """diffusers warns "modules ... should be kept in float32: []" on every dtype cast of a model, even
    when the list is empty (it tests `[] is not None`). Drop only that empty form: a non-empty list, or
    any other warning about a cast, still reaches the log (a blanket mute once hid an fp32 regression)."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "should be kept in float32: []." not in record.getMessage()


logging.getLogger("diffusers.models.modeling_utils").addFilter(_EmptyFp32ListFilter())

# The built-in tiny models (generation/tiny.py) by source name, and their families.
TINY_SOURCES: dict[str, str] = {
    "tiny": "sd15",
    "tiny-xl": "sdxl",
    **{f"tiny-{name}": name for name in FAMILIES if name not in ("sd15", "sdxl")},
}


@dataclass(frozen=True)
class ModelSpec:
    name: str
    source: str
    family: str  # a key of generation.families.FAMILIES
    default_steps: int
    default_guidance: float
    default_sampler: str
    # `?refiner=name`: a configured SDXL refiner that finishes this model's txt2img renders, taking over
    # at `refiner_at` of the noise schedule (the base's denoising_end, the refiner's denoising_start).
    refiner: str | None = None
    refiner_at: float = 0.8
    # Per-model settings (`source?key=value`, see MODEL_OPTIONS); None keeps the model's own.
    spacing: str | None = None  # scheduler timestep_spacing: "trailing" for few-step distilled models
    prediction: str | None = None  # scheduler prediction_type: "epsilon" | "v_prediction"
    zero_snr: bool = False  # rescale the noise schedule to zero terminal SNR (v-prediction models)
    guidance_rescale: float = 0.0  # the pipeline call's guidance_rescale (fights over-exposure with zero SNR)
    clip_skip: int | None = None  # as A1111 / model cards count it: 1 = last CLIP layer, 2 = penultimate
    vae: str | None = None  # a separate VAE: .safetensors file, diffusers folder or hub id
    size: int | None = None  # native square side; None = the family's
    # `?inpaint=name`: a configured inpaint checkpoint (9-channel UNet) that paints this model's canvas jobs;
    # None: this model's own modules inpaint by masked latent blending.
    inpaint: str | None = None
    # `?ip_adapter=<file or folder>&image_encoder=<folder>`: the IP-Adapter behind --sref / --cref / --oref /
    # /blend (generation/references.py); None: this model takes no image references.
    ip_adapter: AdapterConfig | None = None

    @property
    def is_tiny(self) -> bool:
        return self.source in TINY_SOURCES

    @property
    def scheduler_options(self) -> dict[str, Any]:
        """Scheduler config keys this model sets over every sampler's (see samplers.scheduler_options)."""
        options: dict[str, Any] = {}
        if self.spacing is not None:
            options["timestep_spacing"] = self.spacing
        if self.prediction is not None:
            options["prediction_type"] = self.prediction
        if self.zero_snr:
            options["rescale_betas_zero_snr"] = True
        return options

    def call_options(self, accepted: Any) -> dict[str, Any]:
        """Pipeline call arguments this model sets, among the `accepted` parameter names (SD1.x img2img has
        no guidance_rescale)."""
        options: dict[str, Any] = {}
        # diffusers counts layers skipped beyond its default: SD1.x / SD2 use the last layer (card's 1), SDXL
        # and SD3 already the penultimate (card's 2).
        penultimate = self.family in ("sdxl", "sd3")
        skip = None if self.clip_skip is None else self.clip_skip - (2 if penultimate else 1)
        if skip:
            options["clip_skip"] = skip
        if self.guidance_rescale:
            options["guidance_rescale"] = self.guidance_rescale
        return {k: v for k, v in options.items() if k in accepted}


@dataclass
class _Loaded:
    pipe: Any
    # The model's own scheduler config: each render builds its sampler from this, never from the
    # previous render's scheduler (whose options, e.g. karras sigmas, would leak into the next).
    scheduler_config: Any = None
    img2img: Any = None
    inpaint: Any = None
    warmed: bool = False
    # Taken out of the pipeline at load time (which would black out flagged images itself); the worker
    # records its verdicts and the guild's NSFW policy decides how results are shown.
    safety: SafetyChecker | None = None
    # LoRA adapters loaded into this model's UNet / text encoders (shared by its img2img pipeline), by
    # adapter name; they stay loaded and are switched per call (ModelRegistry.use_loras).
    adapters: set[str] = field(default_factory=set)
    # With hotswap (ModelRegistry.lora_hotswap_rank): slot adapter name -> the LoRA's adapter name in it.
    slots: dict[str, str] = field(default_factory=dict)
    # Textual-inversion embeddings added to its tokenizers and text encoders, by trigger word.
    embeddings: set[str] = field(default_factory=set)
    # Its IP-Adapter once a job with image references loaded it (switched off for plain calls).
    adapter: AdapterState | None = None


def pick_device(device: str = "auto") -> str:
    import torch

    if device != "auto":
        return device
    if torch.cuda.is_available():
        return "cuda"
    if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
        return "mps"
    return "cpu"


# The dtypes ATELIER_DTYPE may name; `auto` picks per device (pick_dtype).
DTYPE_NAMES = ("auto", "float16", "bfloat16", "float32")

# ATELIER_OFFLOAD: weights wait in host RAM and move to the card per model (`model`: one model on the card
# at a time) or per layer (`sequential`: a few hundred MB on the card, several times slower).
OFFLOAD_MODES = ("none", "model", "sequential")

# Graphs torch.compile may make per function before it gives up compiling new shapes (see _load).
RECOMPILE_LIMIT = 64

# The half-precision weight files most hub repos publish beside the fp32 ones (`*.fp16.safetensors`):
# half the download, the disk and the load time of a model that runs in half precision anyway.
HALF_VARIANT = "fp16"

# One decoded image above this many pixels is decoded in tiles, and a batch above it one image at a
# time: an SD / SDXL VAE decodes 1024² untiled in a few GB, but a 2048² upscale needs over 10 GB.
VAE_TILE_PIXELS = 2 * 1024 * 1024


def pick_dtype(device: str, requested: str = "auto", capability: tuple[int, int] | None = None) -> Any:
    """The dtype to load models in: `requested` unless it is `auto`, else the device's best.

    `capability` is the CUDA compute capability (asked of the card when None).
    """
    import torch

    if requested not in DTYPE_NAMES:
        raise ValueError(f"unknown dtype {requested!r}: use one of {', '.join(DTYPE_NAMES)}")
    if requested != "auto":
        return getattr(torch, requested)
    if device.startswith("cuda"):
        # bf16 has fp32's range (no fp16 overflow, no VAE upcast), but only Ampere (8.0) and later run it
        # natively: `torch.cuda.is_bf16_supported()` also says yes on T4 / V100 / 20xx, which emulate it
        # slowly. Those get fp16, with the SDXL VAE upcast for decoding (undone in Engine even on OOM).
        major, minor = capability if capability is not None else torch.cuda.get_device_capability(device)
        return torch.bfloat16 if (major, minor) >= (8, 0) else torch.float16
    if device == "mps":
        return torch.float16
    return torch.float32


_OOM_MARKERS = ("out of memory", "cudnn_status_alloc_failed", "cublas_status_alloc_failed")


def is_oom(exc: BaseException) -> bool:
    """True for running out of device memory, including cuDNN / cuBLAS failing to allocate a workspace
    (those surface as a plain RuntimeError, not torch.OutOfMemoryError)."""
    import torch

    if isinstance(exc, torch.OutOfMemoryError):
        return True
    text = str(exc).lower()
    return isinstance(exc, RuntimeError) and any(marker in text for marker in _OOM_MARKERS)


def fit_vae(pipe: Any, width: int, height: int, count: int, tile_pixels: int = VAE_TILE_PIXELS) -> None:
    """Turn VAE tiling / slicing on for a large decode and off otherwise (the VAE is shared by every
    pipeline of the model, so each call sets both ways). `pipe.enable_vae_tiling()` is gone in
    diffusers 0.40+; the VAE's own switches are the lasting API."""
    vae = pipe.vae
    if width * height > tile_pixels:
        vae.enable_tiling()
    else:
        vae.disable_tiling()
    if width * height * count > tile_pixels:
        vae.enable_slicing()
    else:
        vae.disable_slicing()


def _check_offload(mode: str, device: str) -> str:
    """ATELIER_OFFLOAD as given, refused at start where it cannot work: diffusers' offload moves weights
    between host RAM and a CUDA card (through accelerate); on a CPU it has nothing to save, and silently
    ignoring it would hide that the card the operator sized it for is not in use."""
    if mode not in OFFLOAD_MODES:
        raise ConfigError(f"ATELIER_OFFLOAD={mode!r} is not known: use one of {', '.join(OFFLOAD_MODES)}.")
    if mode != "none" and not device.startswith("cuda"):
        raise ConfigError(
            f"ATELIER_OFFLOAD={mode} needs a CUDA GPU, but models run on {device}: "
            "unset ATELIER_OFFLOAD (or set it to none), or set ATELIER_DEVICE=cuda on a machine with a GPU."
        )
    return mode


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return (text[0] if text else type(exc).__name__)[:200]


# What `source?key=value&...` may set, and what each takes.
MODEL_OPTIONS: dict[str, str] = {
    "steps": "default steps, a whole number from 1 to 1000",
    "cfg": "default guidance, a number from 0 to 100",
    "guidance": "default guidance, a number from 0 to 100",
    "sampler": "default sampler, e.g. dpmpp_2m_karras",
    "spacing": "timestep spacing: trailing, leading or linspace",
    "prediction": "v or epsilon",
    "zsnr": "zero-terminal-SNR schedule, 1 or 0 (on with prediction=v)",
    "cfg_rescale": "guidance rescale, 0 to 1 (0.7 with prediction=v)",
    "clip_skip": "CLIP skip as model cards count it, 1 to 12 (2 = penultimate layer)",
    "vae": "a VAE .safetensors file, diffusers folder or hub id",
    "size": "native square side in pixels, a multiple of 8 from 64 to 4096",
    "refiner": "the name of a configured SDXL refiner that finishes this model's renders",
    "refiner_at": "where the refiner takes over, between 0 and 1 (default 0.8)",
    "inpaint": "the name of a configured inpaint checkpoint (9-channel UNet) of the same family, preferred "
               "for Zoom Out / Pan / Make Square / Vary (Region)",
    "ip_adapter": "an IP-Adapter weights file (or a folder holding one) for --sref / --cref / --oref, /blend",
    "image_encoder": "the IP-Adapter's CLIP vision encoder folder (default: image_encoder beside ip_adapter)",
}
_SPACINGS = ("trailing", "leading", "linspace")
_PREDICTIONS = {"v": "v_prediction", "v_prediction": "v_prediction", "eps": "epsilon", "epsilon": "epsilon"}
_BOOLS = {"1": True, "true": True, "yes": True, "on": True, "0": False, "false": False, "no": False,
          "off": False}


def _split_overrides(source: str) -> tuple[str, dict[str, str]]:
    if "?" not in source:
        return source, {}
    base, _, query = source.partition("?")
    pairs = parse_qsl(query, keep_blank_values=True)
    overrides: dict[str, str] = {}
    for key, value in pairs:
        if key not in MODEL_OPTIONS:
            raise ValueError(f"unknown option {key!r} (known: {', '.join(MODEL_OPTIONS)})")
        if key in overrides:
            raise ValueError(f"option {key!r} is given twice")
        if not value.strip():
            raise ValueError(f"option {key!r} needs a value ({MODEL_OPTIONS[key]})")
        overrides[key] = value.strip()
    return base, overrides


def _restore_text_model_path(pipe: Any) -> None:
    """diffusers' SD pipelines apply `clip_skip` through `text_encoder.text_model.final_layer_norm`, a path
    transformers 5 removed (CLIPTextModel now holds `final_layer_norm` itself): the call raised
    AttributeError. Point the old path at the layer (a plain attribute, not a second registered module)."""
    encoder = getattr(pipe, "text_encoder", None)
    if encoder is not None and not hasattr(encoder, "text_model") and hasattr(encoder, "final_layer_norm"):
        encoder.text_model = types.SimpleNamespace(final_layer_norm=encoder.final_layer_norm)


def _single_file_family(path: Path) -> str:
    from safetensors import safe_open

    try:
        with safe_open(str(path), framework="pt") as f:
            keys = f.keys()
    except Exception as exc:  # SafetensorError derives from Exception only
        raise ValueError(f"{path} is not a readable .safetensors checkpoint: {_first_line(exc)}") from exc
    if any(k.startswith("conditioner.embedders.1") for k in keys):
        return "sdxl"
    if any(k.startswith("cond_stage_model.model.") for k in keys):
        return "sd2"  # OpenCLIP-H text encoder in OpenCLIP's own layout
    if any(".joint_blocks." in k or k.startswith("joint_blocks.") for k in keys):
        return "sd3"
    if any(".double_blocks." in k or k.startswith("double_blocks.") for k in keys):
        return "flux-dev" if any("guidance_in." in k for k in keys) else "flux-schnell"
    return "sd15"


def _json(path: Path) -> dict[str, Any]:
    return json.loads(path.read_text()) if path.is_file() else {}


def _folder_family(path: Path) -> str:
    """The family of a diffusers folder, from model_index.json and the component configs that tell
    apart the families sharing one pipeline class."""
    cls = _json(path / "model_index.json").get("_class_name", "")
    if "Flux" in cls:
        # dev embeds the guidance number; schnell has no input for it.
        guided = _json(path / "transformer" / "config.json").get("guidance_embeds", False)
        return "flux-dev" if guided else "flux-schnell"
    if "StableDiffusion3" in cls:
        return "sd3"
    if "XL" in cls:
        return "sdxl"
    # SD 1.x and 2.x share StableDiffusionPipeline: 2.x has OpenCLIP-H, whose MLP is plain GELU where
    # OpenAI's CLIP-L uses quick GELU (and its UNet projects linearly).
    text = _json(path / "text_encoder" / "config.json")
    unet = _json(path / "unet" / "config.json")
    if text.get("hidden_act") == "gelu" or unet.get("use_linear_projection"):
        return "sd2"
    return "sd15"


def _hub_family(source: str) -> str:
    """A guess from a hub id's name (its model_index.json is only read when it is loaded)."""
    lowered = source.lower()
    if "flux" in lowered:
        return "flux-schnell" if "schnell" in lowered else "flux-dev"
    if "stable-diffusion-3" in lowered or "sd3" in lowered:
        return "sd3"
    if "xl" in lowered:
        return "sdxl"
    if "stable-diffusion-2" in lowered or "sd2" in lowered:
        return "sd2"
    return "sd15"


def _ships_checker(spec: ModelSpec) -> bool:
    """Whether a model will bring an image checker when loaded (True when that cannot be told before
    loading: loading then checks again). SDXL has no checker in diffusers; a single-file checkpoint
    holds none; the tiny models have the skin-tone stand-in."""
    if spec.is_tiny:
        return True
    if spec.family not in ("sd15", "sd2") or Path(spec.source).suffix in (".safetensors", ".ckpt"):
        return False
    index = Path(spec.source) / "model_index.json"
    if not index.is_file():
        return True  # a hub id: its model_index.json is read when it is loaded
    entry = json.loads(index.read_text()).get("safety_checker")
    return isinstance(entry, list) and all(entry)


def detect_family(source: str) -> str:
    if source in TINY_SOURCES:
        return TINY_SOURCES[source]
    path = Path(source)
    if path.is_dir() and (path / "model_index.json").exists():
        return _folder_family(path)
    if path.suffix in (".safetensors", ".ckpt") and path.is_file():
        return _single_file_family(path)
    return _hub_family(source)


def _steps_in_name(name: str) -> int | None:
    # Distilled checkpoints say their step count: "sdxl_lightning_4step", "Hyper-SDXL-8steps".
    match = re.search(r"(\d{1,2})[-_ ]?steps?\b", name)
    return int(match.group(1)) if match else None


def _name_defaults(base: str, family: str) -> tuple[int, float, str, dict[str, Any]]:
    """Defaults for well-known kinds of checkpoint, told by name (every one overridable by an option)."""
    fam = family_of(family)
    steps, guidance, sampler = fam.default_steps, fam.default_guidance, fam.default_sampler
    settings: dict[str, Any] = {}
    lowered = base.lower()
    named_steps = _steps_in_name(lowered)
    if base in TINY_SOURCES:
        return min(8, steps), 7.0 if fam.guidance == "cfg" else guidance, "euler", settings
    if fam.flow:
        return steps, guidance, sampler, settings  # the names below are SD distillations and SD options
    # Few-step distilled models were trained on the last timesteps: trailing spacing reaches t=999.
    if "lightning" in lowered:
        steps, guidance, sampler = named_steps or 4, 0.0, "euler"
        settings["spacing"] = "trailing"
    elif re.search(r"hyper[-_ ]?sd", lowered):  # Hyper-SD / Hyper-SDXL, not "hyperrealistic"
        steps, guidance, sampler = named_steps or 8, 0.0, "ddim"
        settings["spacing"] = "trailing"
    elif "dmd2" in lowered:
        steps, guidance, sampler = named_steps or 4, 0.0, "lcm"
        settings["spacing"] = "trailing"
    elif "turbo" in lowered:
        steps, guidance, sampler = named_steps or 4, 0.0, "euler_a"
        settings["spacing"] = "trailing"
        if re.search(r"sdxl[-_]?turbo", lowered):
            settings["size"] = 512  # SDXL-Turbo itself was trained at 512² (merges named "...XL Turbo" not)
    elif "lcm" in lowered:
        steps, guidance, sampler = 6, 1.5, "lcm"
    if re.search(r"v[-_]?pred", lowered) or "768-v" in lowered:
        settings["prediction"] = "v_prediction"
        if "768-v" in lowered:
            settings["size"] = 768  # SD 2.x 768-v
    return steps, guidance, sampler, settings


def _number(overrides: dict[str, str], key: str, kind: type[int] | type[float], low: float,
            high: float) -> Any:
    raw = overrides[key]
    try:
        value = kind(raw)
    except ValueError:
        value = None
    if value is None or not math.isfinite(value) or not low <= value <= high:
        raise ValueError(f"{key}={raw!r}: {MODEL_OPTIONS[key]}")
    return value


def _bool(raw: str) -> bool:
    value = _BOOLS.get(raw.lower())
    if value is None:
        raise ValueError(f"zsnr={raw!r}: {MODEL_OPTIONS['zsnr']}")
    return value


def _check_vae(raw: str) -> str:
    path = Path(raw).expanduser()
    local = path.suffix in (".safetensors", ".ckpt", ".pt") or raw.startswith(("/", ".", "~"))
    if local and not path.exists():
        raise ValueError(f"vae {raw!r} not found")
    return str(path) if local else raw


def _sampler(overrides: dict[str, str], fam: Family, default: str) -> str:
    """The `sampler` option (by any name members know), checked against the family."""
    sampler = default
    if "sampler" in overrides:
        canonical = normalize_sampler(overrides["sampler"])
        if canonical is None:
            raise ValueError(f"unknown sampler {overrides['sampler']!r} (known: {', '.join(SAMPLERS)})")
        sampler = canonical
    if fam.sampler_error(sampler):
        raise ValueError(fam.sampler_error(sampler))
    return sampler


def _noise_schedule(overrides: dict[str, str], settings: dict[str, Any]) -> tuple[bool, float]:
    """The spacing / prediction / zsnr / cfg_rescale options: spacing and prediction go into `settings`;
    returns (zero terminal SNR, guidance rescale). Raises ValueError naming a bad option."""
    if "spacing" in overrides:
        if overrides["spacing"] not in _SPACINGS:
            raise ValueError(f"spacing={overrides['spacing']!r}: {MODEL_OPTIONS['spacing']}")
        settings["spacing"] = overrides["spacing"]
    if "prediction" in overrides:
        prediction = _PREDICTIONS.get(overrides["prediction"].lower())
        if prediction is None:
            raise ValueError(f"prediction={overrides['prediction']!r}: {MODEL_OPTIONS['prediction']}")
        settings["prediction"] = prediction
    # v-prediction checkpoints of today (NoobAI V-Pred, SD 2.x 768-v) want the zero-terminal-SNR
    # schedule and guidance rescale ~0.7 (Lin et al., "Common Diffusion Noise Schedules are Flawed").
    v_pred = settings.get("prediction") == "v_prediction"
    zero_snr = _bool(overrides["zsnr"]) if "zsnr" in overrides else v_pred
    rescale = _number(overrides, "cfg_rescale", float, 0.0, 1.0) if "cfg_rescale" in overrides else (
        0.7 if v_pred else 0.0)
    return zero_snr, rescale


def _ip_adapter(overrides: dict[str, str], fam: Family) -> AdapterConfig | None:
    if "ip_adapter" not in overrides:
        if "image_encoder" in overrides:
            raise ValueError("image_encoder goes with ip_adapter")
        return None
    if fam.flow or fam.name == "sd3":
        raise ValueError("ip_adapter works on SD 1.x, SD 2.x and SDXL models (a UNet)")
    return AdapterConfig.parse(overrides["ip_adapter"], overrides.get("image_encoder"))


def make_spec(name: str, source: str) -> ModelSpec:
    """The ModelSpec for `name=source`. Raises ConfigError naming the bad option or value."""
    try:
        base, overrides = _split_overrides(source)
        family = detect_family(base)
        fam = family_of(family)
        steps, guidance, sampler, settings = _name_defaults(base, family)
        if "steps" in overrides:
            steps = _number(overrides, "steps", int, 1, 1000)
        for key in ("guidance", "cfg"):
            if key in overrides:
                guidance = _number(overrides, key, float, 0.0, 100.0)
        sampler = _sampler(overrides, fam, sampler)
        if fam.flow and {"spacing", "prediction", "zsnr", "cfg_rescale"} & set(overrides):
            raise ValueError(f"{fam.label} models sample by flow matching: spacing, prediction, zsnr and "
                             "cfg_rescale do not apply")
        refiner_at = 0.8
        if "refiner_at" in overrides:
            refiner_at = _number(overrides, "refiner_at", float, -math.inf, math.inf)
        if not 0.0 < refiner_at < 1.0:
            raise ValueError("refiner_at must be between 0 and 1, like 0.8")
        zero_snr, rescale = _noise_schedule(overrides, settings)
        clip_skip = _number(overrides, "clip_skip", int, 1, 12) if "clip_skip" in overrides else None
        if "size" in overrides:
            settings["size"] = _number(overrides, "size", int, 64, 4096)
            if settings["size"] % 8:
                raise ValueError(f"size={settings['size']}: {MODEL_OPTIONS['size']}")
        vae = _check_vae(overrides["vae"]) if "vae" in overrides else None
        ip_adapter = _ip_adapter(overrides, fam)
        if zero_snr and not supports_zero_snr(sampler):
            raise ValueError(
                f"sampler {sampler_label(sampler)!r} cannot run the zero-terminal-SNR schedule of a "
                "v-prediction model: choose another sampler or set zsnr=0"
            )
    except ValueError as exc:
        # int("x") / float("x") name the value but not the option: the source says which.
        raise ConfigError(f"model {name!r}: bad option in {source!r}: {exc}") from exc
    refiner = overrides.get("refiner") or None
    return ModelSpec(name, base, family, steps, guidance, sampler, refiner, refiner_at,
                     spacing=settings.get("spacing"),
                     prediction=settings.get("prediction"), zero_snr=zero_snr, guidance_rescale=rescale,
                     clip_skip=clip_skip, vae=vae, size=settings.get("size"),
                     inpaint=overrides.get("inpaint") or None, ip_adapter=ip_adapter)


def _check_inpaint_models(specs: dict[str, ModelSpec]) -> None:
    """Each `?inpaint=` names another configured model of the same family (ValueError otherwise)."""
    for spec in specs.values():
        if spec.inpaint is None:
            continue
        inpaint = specs.get(spec.inpaint)
        if inpaint is None or inpaint.name == spec.name:
            raise ValueError(f"model {spec.name!r}: inpaint {spec.inpaint!r} is not another configured model")
        if inpaint.family != spec.family:
            raise ValueError(f"model {spec.name!r}: inpaint model {inpaint.name!r} is of another family "
                             f"({inpaint.family})")


class ModelCatalog(Protocol):
    """The models requests are validated against: a ModelRegistry in-process, or (remote workers) the
    catalog the workers announce (generation.remote.dispatcher.RemoteModels)."""

    def names(self) -> list[str]: ...

    def spec(self, name: str | None) -> ModelSpec: ...

    def resident_pipeline(self, name: str) -> Any | None: ...

    # The LoRA / embedding library requests are checked against (names, families, hashes).
    loras: LoraLibrary


class ModelRegistry:
    """Named models, loaded lazily; at most `max_loaded` stay resident (least recently used leaves)."""

    def __init__(
        self,
        sources: list[tuple[str, str]],
        data_dir: Path,
        device: str = "auto",
        dtype: str = "auto",
        compile: bool = False,
        max_loaded: int = 2,
        tiny_nsfw_threshold: float = 0.4,
        safety_checker: str | None = None,
        offload: str = "none",
        lora_dir: Path | None = None,
        lora_hotswap_rank: int | None = None,
    ) -> None:
        if not sources:
            raise ValueError("at least one model must be configured")
        self.data_dir = Path(data_dir)
        self.device = pick_device(device)
        self.dtype = pick_dtype(self.device, dtype)
        self.compile = compile
        # LoRAs hotswapped into fixed slots padded to this rank (None: loaded side by side and switched).
        # On with compile (bot/config.py): a compiled UNet then keeps its graph when the LoRAs change.
        self.lora_hotswap_rank = lora_hotswap_rank
        self.offload = _check_offload(offload, self.device)
        self.max_loaded = max(1, max_loaded)
        self.tiny_nsfw_threshold = tiny_nsfw_threshold
        self.loras = LoraLibrary(lora_dir if lora_dir is not None else self.data_dir / "loras")
        self._specs: dict[str, ModelSpec] = {}
        for name, source in sources:
            if name in self._specs:
                raise ValueError(f"model name {name!r} is configured twice")
            self._specs[name] = make_spec(name, source)
        for spec in self._specs.values():
            if spec.refiner is None:
                continue
            refiner = self._specs.get(spec.refiner)
            if refiner is None or refiner.name == spec.name:
                raise ValueError(
                    f"model {spec.name!r}: refiner {spec.refiner!r} is not another configured model"
                )
            if spec.family != "sdxl" or refiner.family != "sdxl":
                raise ValueError(f"model {spec.name!r}: a refiner works on SDXL models only")
        _check_inpaint_models(self._specs)
        self._loaded: OrderedDict[str, _Loaded] = OrderedDict()
        self._lock = threading.RLock()
        for spec in self._specs.values():
            if spec.is_tiny:
                log.warning(
                    "MODEL %r IS THE BUILT-IN TINY %s MODEL: images will be noise. "
                    "Set ATELIER_MODEL to a real checkpoint for real pictures.",
                    spec.name,
                    family_of(spec.family).label,
                )
        self._init_safety(safety_checker)

    # -- what is configured -------------------------------------------------------------------

    def names(self) -> list[str]:
        return list(self._specs)

    @property
    def default(self) -> ModelSpec:
        return next(iter(self._specs.values()))

    def spec(self, name: str | None) -> ModelSpec:
        if name is None or name == "":
            return self.default
        spec = self._specs.get(name)
        if spec is None:
            raise InvalidRequest(f"Unknown model `{name}`. Available: {', '.join(self._specs)}.")
        return spec

    def is_loaded(self, name: str) -> bool:
        return name in self._loaded

    def resident_pipeline(self, name: str) -> Any | None:
        """The txt2img pipeline of `name` if it is loaded, else None: never loads, never waits for the
        registry's lock (safe from the event loop while a worker thread loads or renders)."""
        entry = self._loaded.get(self.spec(name).name)
        return None if entry is None else entry.pipe

    # -- loaded pipelines -----------------------------------------------------------------------

    def pipeline(self, name: str) -> Any:
        """The loaded txt2img pipeline for `name` (loading it, and evicting the LRU one, if needed)."""
        entry = self._entry(name)
        if entry.pipe is entry.img2img:
            raise RenderError(f"Model `{self.spec(name).name}` is a refiner: it only finishes another "
                              "model's images (`?refiner=` on that model).")
        if entry.pipe is entry.inpaint:
            raise RenderError(f"Model `{self.spec(name).name}` is an inpaint model: it only paints another "
                              "model's canvas actions (`?inpaint=` on that model).")
        return entry.pipe

    def _auto_class(self, spec: ModelSpec) -> Any:
        """The diffusers auto class that loads `spec` as what it is (base, refiner or inpaint model)."""
        from diffusers import AutoPipelineForImage2Image, AutoPipelineForInpainting, AutoPipelineForText2Image

        if self._is_inpaint(spec):
            return AutoPipelineForInpainting
        return AutoPipelineForImage2Image if self._is_refiner(spec) else AutoPipelineForText2Image

    def _is_inpaint(self, spec: ModelSpec) -> bool:
        # Loaded as what it is: AutoPipelineForText2Image would build a txt2img pipeline around its 9-channel
        # UNet, which no txt2img call can drive.
        return any(s.inpaint == spec.name for s in self._specs.values())

    def _is_refiner(self, spec: ModelSpec) -> bool:
        # A refiner is an img2img pipeline (model_index.json says StableDiffusionXLImg2ImgPipeline), which
        # AutoPipelineForText2Image would turn into a base pipeline without its aesthetic-score conditioning.
        return any(s.refiner == spec.name for s in self._specs.values()) or "refiner" in spec.source.lower()

    def safety_checker(self, name: str) -> SafetyChecker | None:
        """The NSFW checker of model `name` (its own, the tiny stand-in, or None)."""
        return self._entry(name).safety

    def img2img(self, name: str) -> Any:
        """An img2img pipeline sharing the txt2img pipeline's loaded modules (no second copy)."""
        return self._sharing(name, "img2img")

    def inpaint(self, name: str) -> Any:
        """The inpaint pipeline for model `name`'s canvas jobs: its `?inpaint=` checkpoint (9-channel UNet,
        which sees the mask and the kept pixels) when it names one, else one sharing the model's own loaded
        modules, which diffusers drives by masked latent blending (the kept latents re-noised into each
        step)."""
        spec = self.spec(name)
        if spec.inpaint is not None:
            return self._entry(spec.inpaint).pipe
        return self._sharing(name, "inpaint")

    def _sharing(self, name: str, task: Literal["img2img", "inpaint"]) -> Any:
        """The `task` pipeline built once over model `name`'s loaded modules, kept on its entry."""
        with self._lock:
            entry = self._entry(name)
            if getattr(entry, task) is None:
                from diffusers import AutoPipelineForImage2Image, AutoPipelineForInpainting

                auto = AutoPipelineForImage2Image if task == "img2img" else AutoPipelineForInpainting
                # The task's class of the loaded one (SD, SDXL, SD3, Flux), sharing its modules.
                # from_pipe casts the shared modules to `torch_dtype`, float32 when it is not given
                # (diffusers >= 0.33): without it every render of this model after the first U / V would
                # run in fp32, at twice the memory and half the speed.
                pipe = auto.from_pipe(entry.pipe, **self._dtype_kwargs())
                pipe.set_progress_bar_config(disable=True)
                setattr(entry, task, pipe)
            return getattr(entry, task)

    def use_loras(self, name: str, loras: LoraSet) -> None:
        """Make `loras` the active adapters of model `name` for its next call (txt2img and img2img alike:
        from_pipe shares the modules). An adapter is loaded the first time a job asks for it and stays
        loaded with the model; later jobs only switch (set_adapters / disable_lora), never reload."""
        with self._lock:
            entry = self._entry(name)
            pipe = entry.pipe
            if not loras:
                if entry.adapters:
                    pipe.disable_lora()
                return
            names: list[str] = []
            for slot, (lora_name, _) in enumerate(loras):
                lora = self.loras.get(lora_name)
                if lora is None:
                    raise RenderError(f"LoRA `{lora_name}` is no longer in the library.")
                if self.lora_hotswap_rank is not None:
                    names.append(self._hotswap(entry, slot, lora))
                    continue
                adapter = adapter_name(lora)
                if adapter not in entry.adapters:
                    log.info("loading LoRA %r into model %r", lora_name, self.spec(name).name)
                    try:
                        pipe.load_lora_weights(str(lora.path), adapter_name=adapter)
                    except (OSError, ValueError, KeyError, RuntimeError) as exc:
                        raise RenderError(f"Could not load LoRA `{lora_name}`: {_first_line(exc)}") from exc
                    entry.adapters.add(adapter)
                names.append(adapter)
            # disable_lora switches the layers off, and set_adapters only picks which ones are active.
            pipe.enable_lora()
            pipe.set_adapters(names, adapter_weights=[weight for _, weight in loras])

    @staticmethod
    def _hotswap(entry: Any, slot: int, lora: LoraFile) -> str:
        """Put `lora` in adapter slot `slot` of `entry`'s pipeline: the first time a plain load (the slot's
        layers are made, padded to the hotswap rank), later its weights replace the slot's in place, so a
        compiled UNet runs the same graph. The slot's adapter name."""
        adapter = f"slot{slot}"
        held = entry.slots.get(adapter)
        if held == adapter_name(lora):
            return adapter
        log.info("%s LoRA %r in slot %d", "hotswapping" if held else "loading", lora.name, slot)
        try:
            entry.pipe.load_lora_weights(str(lora.path), adapter_name=adapter, hotswap=held is not None)
        except (OSError, ValueError, KeyError, RuntimeError) as exc:
            # e.g. a rank above ATELIER_LORA_MAX_RANK, or text-encoder layers (diffusers cannot hotswap them)
            raise RenderError(f"Could not load LoRA `{lora.name}`: {_first_line(exc)}") from exc
        entry.slots[adapter] = adapter_name(lora)
        entry.adapters.add(adapter)
        return adapter

    def use_embeddings(self, name: str, texts: list[str]) -> bool:
        """Add to model `name` the library's embeddings whose trigger word appears in `texts` (once: they
        stay, and change nothing for prompts without the word). True when the model has any."""
        with self._lock:
            entry = self._entry(name)
            for embedding in self.loras.embeddings_in(texts, self.spec(name).family):
                if embedding.name in entry.embeddings:
                    continue
                log.info("loading embedding %r into model %r", embedding.name, self.spec(name).name)
                try:
                    load_embedding(entry.pipe, embedding)
                except (OSError, ValueError, KeyError, RuntimeError) as exc:
                    raise RenderError(
                        f"Could not load embedding `{embedding.name}`: {_first_line(exc)}"
                    ) from exc
                entry.embeddings.add(embedding.name)
            return bool(entry.embeddings)

    def use_references(self, name: str, references: ReferenceSet) -> AdapterState | None:
        """Switch model `name`'s UNet (shared by its img2img / inpaint pipelines) to `references`: its
        IP-Adapter is loaded by the first job that has any and stays; a call without references switches
        it off, so plain renders are exactly what they were before it was loaded. Returns the adapter state
        (None while the model never had one)."""
        with self._lock:
            entry = self._entry(name)
            spec = self.spec(name)
            if references and entry.adapter is None:
                if spec.ip_adapter is None:
                    raise RenderError(NOT_CONFIGURED)
                log.info("loading the IP-Adapter %s into model %r", spec.ip_adapter.weights, spec.name)
                entry.adapter = load_adapter(entry.pipe, spec.ip_adapter, self.dtype, self.device)
            switch(entry.pipe, entry.adapter, references)
            return entry.adapter

    def scheduler_config(self, name: str) -> Any:
        return self._entry(name).scheduler_config

    def mark_warm(self, name: str) -> bool:
        """Mark `name` warmed; True if it was cold (so the caller should warm it)."""
        with self._lock:
            entry = self._entry(name)
            was_cold = not entry.warmed
            entry.warmed = True
            return was_cold

    def restore_vae_dtype(self, pipe: Any) -> None:
        """Put the VAE back in the loaded dtype. The SDXL pipelines upcast it to fp32 for the decode /
        encode in fp16 and cast it back only when that succeeds: after an out-of-memory it would stay
        fp32, and every later render of the model would fail on a dtype mismatch."""
        if pipe.vae.dtype != self.dtype:
            log.info("VAE left in %s by an interrupted render; back to %s", pipe.vae.dtype, self.dtype)
            pipe.vae.to(dtype=self.dtype)

    def evict_others(self, keep: str) -> list[str]:
        """Unload every model except `keep` (to free device memory after an out-of-memory)."""
        keep = self.spec(keep).name
        with self._lock:
            others = [name for name in self._loaded if name != keep]
            for name in others:
                log.info("unloading model %r: out of memory while rendering %r", name, keep)
                del self._loaded[name]
        if others:
            self._free_memory()
        return others

    def unload(self, name: str) -> None:
        with self._lock:
            entry = self._loaded.pop(name, None)
        if entry is not None:
            del entry
            self._free_memory()

    def _entry(self, name: str) -> _Loaded:
        spec = self.spec(name)
        with self._lock:
            entry = self._loaded.get(spec.name)
            if entry is not None:
                self._loaded.move_to_end(spec.name)
                return entry
            while len(self._loaded) >= self.max_loaded:
                self._evict_one()
            pipe = self._load_with_room(spec)
            safety = detach_checker(pipe, tiny=spec.is_tiny, tiny_threshold=self.tiny_nsfw_threshold,
                                    standalone=self._standalone_checker())
            if safety is None:
                self._warn_unchecked(spec)
            entry = _Loaded(pipe, scheduler_config=pipe.scheduler.config, safety=safety)
            if self._is_refiner(spec):
                entry.img2img = pipe
            if self._is_inpaint(spec):
                entry.inpaint = pipe
            self._loaded[spec.name] = entry
            return entry

    # -- image safety checks ----------------------------------------------------------------------

    def _init_safety(self, source: str | None) -> None:
        """Remember the standalone checker's source and say at start which models will have no image
        check at all (the prompt word list is then their only defence)."""
        self.safety_source = source or None
        self._standalone: SafetyChecker | None = None
        self._warned_unchecked: set[str] = set()
        if self.safety_source is None:
            for spec in self._specs.values():
                if not _ships_checker(spec):
                    self._warn_unchecked(spec)

    def _warn_unchecked(self, spec: ModelSpec) -> None:
        # Once per model: at start when its files say so, else when loading shows it.
        if spec.name in self._warned_unchecked:
            return
        self._warned_unchecked.add(spec.name)
        log.warning(
            "model %r has no image safety checker: only the prompt word list keeps NSFW images out. "
            "Set ATELIER_SAFETY_CHECKER (e.g. CompVis/stable-diffusion-safety-checker) to check its images.",
            spec.name,
        )

    def _standalone_checker(self) -> SafetyChecker | None:
        """The ATELIER_SAFETY_CHECKER checker, loaded once with the first model and shared by all."""
        if self.safety_source is None:
            return None
        with self._lock:
            if self._standalone is None:
                log.info("loading the safety checker from %s on %s", self.safety_source, self.device)
                try:
                    self._standalone = load_standalone_checker(self.safety_source, device=self.device,
                                                               dtype=self.dtype)
                except (OSError, ValueError, RuntimeError) as exc:
                    raise RenderError(
                        f"Could not load the safety checker from {self.safety_source}: {_first_line(exc)}"
                    ) from exc
            return self._standalone

    def _evict_one(self) -> bool:
        if not self._loaded:
            return False
        old, _ = self._loaded.popitem(last=False)
        log.info("unloading model %r to make room", old)
        self._free_memory()
        return True

    def _free_memory(self) -> None:
        gc.collect()
        if self.device == "cuda":
            import torch

            torch.cuda.empty_cache()

    def _load_with_room(self, spec: ModelSpec) -> Any:
        # When memory is short, drop least recently used pipelines one by one and retry.
        while True:
            try:
                return self._load(spec)
            except RenderError:
                raise
            except (OSError, ValueError, KeyError, RuntimeError) as exc:
                if is_oom(exc):
                    # The traceback's frames hold the half-loaded weights: drop them before freeing.
                    traceback.clear_frames(exc.__traceback__)
                    self._free_memory()
                    if not self._evict_one():
                        raise RenderError(f"Model `{spec.name}` does not fit in memory.") from exc
                    continue
                # A wrong path, a hub id while offline, a damaged file: say which model and why.
                log.debug("loading model %r from %s failed", spec.name, spec.source, exc_info=True)
                raise RenderError(
                    f"Could not load model `{spec.name}` from {spec.source}: {_first_line(exc)}"
                ) from exc

    def _load(self, spec: ModelSpec) -> Any:
        import diffusers
        import diffusers.utils.logging as diffusers_logging
        import torch
        import transformers.utils.logging as transformers_logging

        # Loading bars would flood the bot's log on every swap.
        diffusers_logging.disable_progress_bar()
        transformers_logging.disable_progress_bar()

        # Folders and hub ids name their pipeline class in model_index.json; a single file does not.
        fam = family_of(spec.family)
        cls = self._auto_class(spec)

        kwargs = self._dtype_kwargs()
        log.info("loading model %r from %s on %s (%s)", spec.name, spec.source, self.device, self.dtype)
        if spec.is_tiny:
            folder = ensure_tiny_model(self.data_dir, family=spec.family)
            pipe = cls.from_pretrained(folder, local_files_only=True, **kwargs)  # written without variants
        else:
            path = Path(spec.source)
            if path.suffix in (".safetensors", ".ckpt"):
                if not path.is_file():
                    raise RenderError(f"Checkpoint file {path} not found.")
                if fam.config_repo is None:
                    raise RenderError(
                        f"Model `{spec.name}`: single-file {fam.label} checkpoints are not supported; "
                        "use its diffusers folder or hub id."
                    )
                config = self._single_file_config(path, spec.family)
                pipe = getattr(diffusers, fam.pipeline).from_single_file(
                    str(path), config=config, local_files_only=Path(config).is_dir(), **kwargs
                )
            elif path.is_dir():
                pipe = self._from_pretrained(cls, path, local_files_only=True, **kwargs)
            else:
                pipe = self._from_pretrained(cls, spec.source, **kwargs)
        if spec.vae is not None:
            pipe.vae = self._load_vae(spec.vae, pipe.vae, kwargs)
        if spec.clip_skip is not None:
            _restore_text_model_path(pipe)
        pipe.set_progress_bar_config(disable=True)
        if self.offload == "model":
            pipe.enable_model_cpu_offload(device=self.device)
        elif self.offload == "sequential":
            pipe.enable_sequential_cpu_offload(device=self.device)
        else:
            pipe = pipe.to(self.device)
        if self.dtype == torch.bfloat16 and getattr(pipe.vae.config, "force_upcast", False):
            # bf16 has fp32's range, so the SDXL VAE does not overflow: no fp32 copy for each encode.
            pipe.vae.register_to_config(force_upcast=False)
        # VAE tiling / slicing are switched per render by size (fit_vae).
        self._prepare_denoiser(pipe)
        return pipe

    def _prepare_denoiser(self, pipe: Any) -> None:
        """LoRA hotswap slots, then torch.compile (in that order: diffusers needs the slots first)."""
        import torch

        if self.lora_hotswap_rank is not None and hasattr(pipe, "enable_lora_hotswap"):
            # Before the first LoRA and before compiling, as diffusers requires: every LoRA's layers are then
            # padded to this rank and their scales are tensors, so a hotswap changes values, not the graph.
            pipe.enable_lora_hotswap(target_rank=self.lora_hotswap_rank)
        if self.compile:
            # Each new input shape, and each branch the UNet takes on it (a latent side not divisible by 8,
            # an img2img latent's strides, a longer prompt), may cost a graph: the warm-up plan made 13 on the
            # tiny model (bench/gpu_check.py --compile). Past torch's limit (8) dynamo runs further shapes
            # uncompiled, with no more than a log line.
            torch._dynamo.config.recompile_limit = max(torch._dynamo.config.recompile_limit, RECOMPILE_LIMIT)
            # The denoiser runs every step: a UNet (SD1/2/XL) or a transformer (SD3, Flux).
            name = "unet" if getattr(pipe, "unet", None) is not None else "transformer"
            setattr(pipe, name, torch.compile(getattr(pipe, name)))

    @staticmethod
    def _load_vae(source: str, own: Any, dtype_kwargs: dict[str, Any]) -> Any:
        """A replacement VAE (e.g. the fp16-fix SDXL VAE, vae-ft-mse for SD1.5) in the pipeline's dtype."""
        from diffusers import AutoencoderKL

        path = Path(source)
        if path.suffix in (".safetensors", ".ckpt", ".pt"):
            # A bare VAE file carries no config, and offline there is none to fetch: it has the architecture
            # of the model's own VAE (it decodes the same latents), so that config describes it.
            with tempfile.TemporaryDirectory() as config:
                own.save_config(config)
                return AutoencoderKL.from_single_file(str(path), config=config, local_files_only=True,
                                                      **dtype_kwargs)
        if path.is_dir():
            # A VAE folder, or a whole pipeline folder whose VAE is wanted.
            sub = {} if (path / "config.json").is_file() else {"subfolder": "vae"}
            return AutoencoderKL.from_pretrained(path, local_files_only=True, **sub, **dtype_kwargs)
        return AutoencoderKL.from_pretrained(source, **dtype_kwargs)

    def _from_pretrained(self, cls: Any, source: str | Path, **kwargs: Any) -> Any:
        """`cls.from_pretrained`, from the fp16 weight files when the model runs in half precision and the
        source has them (fp16 weights lose nothing that bf16 keeps), else from the full ones."""
        import torch

        if self.dtype in (torch.float16, torch.bfloat16):
            try:
                return cls.from_pretrained(source, variant=HALF_VARIANT, **kwargs)
            except (OSError, ValueError) as exc:
                # diffusers raises ValueError (a local folder) or an EnvironmentError (the hub) when no
                # component has the variant; a real trouble (offline, a wrong id) fails again just below.
                log.info("%s has no %s weights (%s); loading the full ones", source, HALF_VARIANT,
                         _first_line(exc))
        return cls.from_pretrained(source, **kwargs)

    def _dtype_kwargs(self) -> dict[str, Any]:
        # Always, fp32 included: without it transformers 5 loads a text encoder in the dtype its config.json
        # names, float16 in any folder saved from an fp16 pipeline, and an fp32 render then fails on the
        # mismatch. (`dtype=` is the new name, unknown to older diffusers; the old one only adds a notice.)
        return {"torch_dtype": self.dtype}

    def _single_file_config(self, path: Path, family: str) -> str:
        # Offline, from_single_file needs a diffusers folder describing the family's layout.
        for candidate in (
            path.with_suffix(""),
            path.parent / f"{path.stem}.config",
            self.data_dir / "configs" / family,
        ):
            if (candidate / "model_index.json").exists():
                return str(candidate)
        repo = family_of(family).config_repo
        assert repo is not None  # checked by the caller
        return repo
