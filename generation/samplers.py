"""Sampler names users know (A1111 / ComfyUI style) mapped to diffusers schedulers."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class SamplerSpec:
    scheduler: str  # diffusers class name
    options: dict[str, Any] = field(default_factory=dict)
    label: str = ""


SAMPLERS: dict[str, SamplerSpec] = {
    "euler": SamplerSpec("EulerDiscreteScheduler", {}, "Euler"),
    "euler_a": SamplerSpec("EulerAncestralDiscreteScheduler", {}, "Euler a"),
    "heun": SamplerSpec("HeunDiscreteScheduler", {}, "Heun"),
    "dpmpp_2m": SamplerSpec("DPMSolverMultistepScheduler", {}, "DPM++ 2M"),
    "dpmpp_2m_karras": SamplerSpec(
        "DPMSolverMultistepScheduler", {"use_karras_sigmas": True}, "DPM++ 2M Karras"
    ),
    "dpmpp_sde": SamplerSpec(
        "DPMSolverMultistepScheduler", {"algorithm_type": "sde-dpmsolver++"}, "DPM++ 2M SDE"
    ),
    "unipc": SamplerSpec("UniPCMultistepScheduler", {}, "UniPC"),
    "ddim": SamplerSpec("DDIMScheduler", {}, "DDIM"),
    "pndm": SamplerSpec("PNDMScheduler", {}, "PNDM"),
    "lcm": SamplerSpec("LCMScheduler", {}, "LCM"),
}

SAMPLER_NAMES: tuple[str, ...] = tuple(SAMPLERS)

# Loose spellings people type ("DPM++ 2M Karras", "euler-a") -> canonical names.
_ALIASES = {
    "eulera": "euler_a",
    "euler_ancestral": "euler_a",
    "dpm++2m": "dpmpp_2m",
    "dpm++_2m": "dpmpp_2m",
    "dpm++2mkarras": "dpmpp_2m_karras",
    "dpm++_2m_karras": "dpmpp_2m_karras",
    "dpm++sde": "dpmpp_sde",
}


def normalize_sampler(name: str) -> str | None:
    """The canonical sampler name for `name`, or None when unknown."""
    key = name.strip().lower().replace("-", "_").replace(" ", "_")
    if key in SAMPLERS:
        return key
    return _ALIASES.get(key) or _ALIASES.get(key.replace("_", ""))


def make_scheduler(name: str, base_config: Any) -> Any:
    """A fresh diffusers scheduler for sampler `name`, built from the model's own scheduler config."""
    import diffusers

    spec = SAMPLERS[name]
    cls = getattr(diffusers, spec.scheduler)
    return cls.from_config(base_config, **spec.options)
