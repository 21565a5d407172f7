"""Sampler names users know (A1111 / ComfyUI style) mapped to diffusers schedulers.

The mapping follows diffusers' own "A1111/k-diffusion ↔ diffusers" table (api/schedulers/overview):
DPM++ 2M = DPMSolverMultistepScheduler, Karras = `use_karras_sigmas`, Exponential =
`use_exponential_sigmas` with linspace spacing, 2M / 3M SDE = `algorithm_type="sde-dpmsolver++"` with
solver_order 2 / 3, DPM++ SDE = DPMSolverSDEScheduler (torchsde), DPM2 = KDPM2, LMS = LMSDiscrete.
Requests store the canonical name (the keys of SAMPLERS); labels are what members see.
"""

from __future__ import annotations

import inspect
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from functools import cache
from typing import Any


@dataclass(frozen=True)
class SamplerSpec:
    scheduler: str  # diffusers class name
    options: dict[str, Any] = field(default_factory=dict)
    label: str = ""


# k-diffusion's DPM++ multistep samplers end on a first-order step to sigma 0: diffusers does the same only
# with `euler_at_final` (without it, 2M at 15+ steps extrapolates on the last step and leaves artifacts).
_DPMPP = {
    "solver_order": 2, "algorithm_type": "dpmsolver++", "euler_at_final": True, "final_sigmas_type": "zero"
}
_SDE = {**_DPMPP, "algorithm_type": "sde-dpmsolver++"}
_3M_SDE = {**_SDE, "solver_order": 3}
_KARRAS = {"use_karras_sigmas": True}
# diffusers' table: A1111's "exponential" schedule is exponential sigmas over linspace timesteps.
_EXPONENTIAL = {"use_exponential_sigmas": True, "timestep_spacing": "linspace"}

SAMPLERS: dict[str, SamplerSpec] = {
    "dpmpp_2m": SamplerSpec("DPMSolverMultistepScheduler", _DPMPP, "DPM++ 2M"),
    "dpmpp_2m_karras": SamplerSpec("DPMSolverMultistepScheduler", {**_DPMPP, **_KARRAS}, "DPM++ 2M Karras"),
    "dpmpp_2m_sde": SamplerSpec("DPMSolverMultistepScheduler", _SDE, "DPM++ 2M SDE"),
    "dpmpp_2m_sde_karras": SamplerSpec(
        "DPMSolverMultistepScheduler", {**_SDE, **_KARRAS}, "DPM++ 2M SDE Karras"
    ),
    "dpmpp_2m_sde_exponential": SamplerSpec(
        "DPMSolverMultistepScheduler", {**_SDE, **_EXPONENTIAL}, "DPM++ 2M SDE Exponential"
    ),
    # Until this mapping, `dpmpp_sde` meant 2M SDE; stored jobs keep the name and now get the real one.
    "dpmpp_sde": SamplerSpec("DPMSolverSDEScheduler", {}, "DPM++ SDE"),
    "dpmpp_sde_karras": SamplerSpec("DPMSolverSDEScheduler", _KARRAS, "DPM++ SDE Karras"),
    "dpmpp_3m_sde": SamplerSpec("DPMSolverMultistepScheduler", _3M_SDE, "DPM++ 3M SDE"),
    "dpmpp_3m_sde_karras": SamplerSpec(
        "DPMSolverMultistepScheduler", {**_3M_SDE, **_KARRAS}, "DPM++ 3M SDE Karras"
    ),
    "dpmpp_3m_sde_exponential": SamplerSpec(
        "DPMSolverMultistepScheduler", {**_3M_SDE, **_EXPONENTIAL}, "DPM++ 3M SDE Exponential"
    ),
    "euler": SamplerSpec("EulerDiscreteScheduler", {}, "Euler"),
    "euler_a": SamplerSpec("EulerAncestralDiscreteScheduler", {}, "Euler a"),
    "heun": SamplerSpec("HeunDiscreteScheduler", {}, "Heun"),
    "dpm2": SamplerSpec("KDPM2DiscreteScheduler", {}, "DPM2"),
    "dpm2_karras": SamplerSpec("KDPM2DiscreteScheduler", _KARRAS, "DPM2 Karras"),
    "dpm2_a": SamplerSpec("KDPM2AncestralDiscreteScheduler", {}, "DPM2 a"),
    "dpm2_a_karras": SamplerSpec("KDPM2AncestralDiscreteScheduler", _KARRAS, "DPM2 a Karras"),
    "lms": SamplerSpec("LMSDiscreteScheduler", {}, "LMS"),
    "lms_karras": SamplerSpec("LMSDiscreteScheduler", _KARRAS, "LMS Karras"),
    "ddim": SamplerSpec("DDIMScheduler", {}, "DDIM"),
    "unipc": SamplerSpec("UniPCMultistepScheduler", {}, "UniPC"),
    "lcm": SamplerSpec("LCMScheduler", {}, "LCM"),
    # SD's own PNDM config skips the Runge-Kutta warm-up (PLMS); without that, under 4 steps fails.
    "pndm": SamplerSpec("PNDMScheduler", {"skip_prk_steps": True}, "PNDM"),
}

SAMPLER_NAMES: tuple[str, ...] = tuple(SAMPLERS)

# A model's own scheduler config may carry a noise schedule (many community SDXL checkpoints ship
# DPM++ with Karras sigmas on): reset it so a label means the same thing on every model.
_SCHEDULE_RESETS: dict[str, Any] = {
    "use_karras_sigmas": False,
    "use_exponential_sigmas": False,
    "use_beta_sigmas": False,
    "use_lu_lambdas": False,
    "euler_at_final": False,
    "final_sigmas_type": "zero",
}

# Samplers that draw their noise from a torchsde Brownian tree rather than the pipeline's generators.
_BROWNIAN = ("DPMSolverSDEScheduler",)


def _key(name: str) -> str:
    return "".join(ch for ch in name.lower() if ch.isalnum() or ch == "+").replace("+", "p")


# Loose spellings people type ("DPM++ 2M Karras", "euler-a", "k_dpmpp_2m_ka") -> canonical names.
_ALIASES: dict[str, str] = {
    **{_key(name): name for name in SAMPLERS},
    **{_key(spec.label): name for name, spec in SAMPLERS.items()},
    "eulerancestral": "euler_a",
    "kdpmpp2mka": "dpmpp_2m_karras",
    "kdpmpp2m": "dpmpp_2m",
    "kdpmpp2msdeka": "dpmpp_2m_sde_karras",
    "kdpmpp2msde": "dpmpp_2m_sde",
    "kdpmppsdeka": "dpmpp_sde_karras",
    "kdpmppsde": "dpmpp_sde",
    "keuler": "euler",
    "keulera": "euler_a",
}


def normalize_sampler(name: str) -> str | None:
    """The canonical sampler name for `name` (canonical, label or a loose spelling), or None when unknown."""
    return _ALIASES.get(_key(name))


def sampler_label(name: str) -> str:
    """The name members know for canonical `name` (unknown names are shown as stored)."""
    spec = SAMPLERS.get(name)
    return spec.label if spec is not None else name


@cache
def _accepted(class_name: str) -> frozenset[str]:
    import diffusers

    return frozenset(inspect.signature(getattr(diffusers, class_name).__init__).parameters)


def supports_zero_snr(name: str) -> bool:
    """Whether sampler `name` can run a zero-terminal-SNR schedule (v-prediction models trained for it)."""
    return "rescale_betas_zero_snr" in _accepted(SAMPLERS[name].scheduler)


def scheduler_options(name: str, model_options: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """The config keys sampler `name` sets on top of the model's own scheduler config: schedule resets,
    then the sampler's own options, then the model's (spacing, prediction type, zero SNR: explicit per-model
    settings win). Only keys the scheduler class takes: diffusers drops the others without a word."""
    spec = SAMPLERS[name]
    accepted = _accepted(spec.scheduler)
    merged = {**_SCHEDULE_RESETS, **spec.options, **(model_options or {})}
    return {k: v for k, v in merged.items() if k in accepted}


def make_scheduler(
    name: str,
    base_config: Any,
    model_options: Mapping[str, Any] | None = None,
    seeds: Iterable[int] | None = None,
) -> Any:
    """A fresh diffusers scheduler for sampler `name`, built from the model's own scheduler config.

    `seeds` (one per image of the call) seed the Brownian noise of DPM++ SDE, which would otherwise
    come from torch's global generator: each image then stays reproducible alone and in a batch."""
    import diffusers

    spec = SAMPLERS[name]
    cls = getattr(diffusers, spec.scheduler)
    scheduler = cls.from_config(base_config, **scheduler_options(name, model_options))
    if spec.scheduler in _BROWNIAN and seeds is not None:
        scheduler.noise_sampler_seed = list(seeds)
    return scheduler
