"""Model families: everything the engine, validation and previews assume about a kind of checkpoint.

One frozen `Family` per family, looked up by the name a ModelSpec carries (`spec.family`). Adding a
family means adding a row here (and its tiny model in generation/tiny.py), not new `if family == ...`
branches elsewhere.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, replace
from typing import Any, Literal

from generation.samplers import SAMPLER_NAMES, make_scheduler

# How a model uses the guidance number: classifier-free guidance (two passes, negative prompt),
# a guidance embedding distilled into the model (Flux-dev: one pass, no negative), or not at all.
Guidance = Literal["cfg", "distilled", "none"]

RGBFactors = tuple[tuple[float, float, float], ...]

# Linear latent -> RGB projections for live previews, as ComfyUI has them (comfy/latent_formats.py).
# They apply to latents in the model's own space ((vae latent - shift) * scale), which is what the
# denoising loop holds, so no VAE scaling is needed before projecting.
_SD15_RGB: RGBFactors = (
    (0.3512, 0.2297, 0.3227),
    (0.3250, 0.4974, 0.2350),
    (-0.2829, 0.1762, 0.2721),
    (-0.2120, -0.2616, -0.7177),
)
_SDXL_RGB: RGBFactors = (
    (0.3651, 0.4232, 0.4341),
    (-0.2533, -0.0042, 0.1068),
    (0.1076, 0.1111, -0.0362),
    (-0.3165, -0.2492, -0.2188),
)
_SD3_RGB: RGBFactors = (
    (-0.0922, -0.0175, 0.0749),
    (0.0311, 0.0633, 0.0954),
    (0.1994, 0.0927, 0.0458),
    (0.0856, 0.0339, 0.0902),
    (0.0587, 0.0272, -0.0496),
    (-0.0006, 0.1104, 0.0309),
    (0.0978, 0.0306, 0.0427),
    (-0.0042, 0.1038, 0.1358),
    (-0.0194, 0.0020, 0.0669),
    (-0.0488, 0.0130, -0.0268),
    (0.0922, 0.0988, 0.0951),
    (-0.0278, 0.0524, -0.0542),
    (0.0332, 0.0456, 0.0895),
    (-0.0069, -0.0030, -0.0810),
    (-0.0596, -0.0465, -0.0293),
    (-0.1448, -0.1463, -0.1189),
)
_FLUX_RGB: RGBFactors = (
    (-0.0346, 0.0244, 0.0681),
    (0.0034, 0.0210, 0.0687),
    (0.0275, -0.0668, -0.0433),
    (-0.0174, 0.0160, 0.0617),
    (0.0859, 0.0721, 0.0329),
    (0.0004, 0.0383, 0.0115),
    (0.0405, 0.0861, 0.0915),
    (-0.0236, -0.0185, -0.0259),
    (-0.0245, 0.0250, 0.1180),
    (0.1008, 0.0755, -0.0421),
    (-0.0515, 0.0201, 0.0011),
    (0.0428, -0.0012, -0.0036),
    (0.0817, 0.0765, 0.0749),
    (-0.1264, -0.0522, -0.1103),
    (-0.0280, -0.0881, -0.0499),
    (-0.1262, -0.0982, -0.0778),
)

# The one sampler of flow-matching families: their own FlowMatchEulerDiscreteScheduler.
FLOW_SAMPLERS: tuple[str, ...] = ("euler",)


@dataclass(frozen=True)
class Family:
    name: str
    label: str
    # diffusers txt2img class: single-file loading needs it (folders and hub ids go through
    # AutoPipelineForText2Image, which reads model_index.json).
    pipeline: str
    # A hub folder describing the family's layout, for single-file checkpoints; None when single files
    # of the family are not supported (SD3 / Flux: use a diffusers folder).
    config_repo: str | None
    base: int  # side of the square the family was trained around
    max_pixels: int  # output pixels (2x upscales of every aspect size still fit)
    rgb_factors: RGBFactors
    vae_scaling: float
    default_steps: int
    default_guidance: float
    default_sampler: str
    rgb_bias: tuple[float, float, float] = (0.0, 0.0, 0.0)
    vae_shift: float = 0.0
    latent_channels: int = 4
    multiple: int = 8  # width / height multiple: 8, or 16 where latents are patched 2x2
    packed: bool = False  # Flux: latents travel as 2x2-packed tokens (B, h/2*w/2, 4*C)
    flow: bool = False  # flow matching (FlowMatchEulerDiscreteScheduler; velocity, not noise, is predicted)
    guidance: Guidance = "cfg"
    negative: bool = True  # whether a negative prompt means anything
    # Tokens the longest text encoder reads (CLIP 77; T5 for SD3 / Flux, passed as max_sequence_length).
    max_prompt_tokens: int = 77
    # SDXL zeroes the negative embedding only when no negative prompt is passed at all, so images with
    # and without one render in separate calls to match their solo renders.
    split_negative: bool = False

    @property
    def samplers(self) -> tuple[str, ...]:
        return FLOW_SAMPLERS if self.flow else SAMPLER_NAMES

    @property
    def t5(self) -> bool:
        return self.max_prompt_tokens > 77

    def sampler_error(self, sampler: str) -> str | None:
        """Why `sampler` (a canonical name) cannot drive this family, or None when it can."""
        if sampler in self.samplers:
            return None
        return (
            f"{self.label} models sample by flow matching: sampler `{sampler}` does not apply. "
            f"Use {', '.join(f'`{s}`' for s in self.samplers)}."
        )

    def make_scheduler(self, sampler: str, base_config: Any, model_options: Mapping[str, Any] | None = None,
                       seeds: Iterable[int] | None = None) -> Any:
        """A fresh scheduler for one render, from the model's own scheduler config (plus the model's
        spacing / prediction options and, for DPM++ SDE, the images' seeds: see samplers.make_scheduler)."""
        if self.flow:
            from diffusers import FlowMatchEulerDiscreteScheduler

            return FlowMatchEulerDiscreteScheduler.from_config(base_config)
        return make_scheduler(sampler, base_config, model_options, seeds)


SD15 = Family(
    name="sd15", label="SD 1.x", pipeline="StableDiffusionPipeline",
    config_repo="stable-diffusion-v1-5/stable-diffusion-v1-5", base=512, max_pixels=1024 * 1024,
    rgb_factors=_SD15_RGB, vae_scaling=0.18215,
    default_steps=25, default_guidance=7.0, default_sampler="dpmpp_2m_karras",
)
# SD 2.x: OpenCLIP-H text encoder, 768² (v-prediction) or 512² (base); SD1's latent space.
SD2 = replace(
    SD15, name="sd2", label="SD 2.x", config_repo="stabilityai/stable-diffusion-2-1", base=768,
    max_pixels=1536 * 1536,
)
SDXL = Family(
    name="sdxl", label="SDXL", pipeline="StableDiffusionXLPipeline",
    config_repo="stabilityai/stable-diffusion-xl-base-1.0", base=1024, max_pixels=2048 * 2048,
    rgb_factors=_SDXL_RGB, rgb_bias=(0.1084, -0.0175, -0.0011), vae_scaling=0.13025,
    default_steps=30, default_guidance=6.0, default_sampler="dpmpp_2m_karras", split_negative=True,
)
# SD 3 / 3.5: MMDiT over 16-channel latents patched 2x2, three text encoders (CLIP-L, CLIP-G, T5).
SD3 = Family(
    name="sd3", label="SD 3", pipeline="StableDiffusion3Pipeline", config_repo=None,
    base=1024, max_pixels=2048 * 2048, multiple=16, latent_channels=16,
    rgb_factors=_SD3_RGB, rgb_bias=(0.2394, 0.2135, 0.1925), vae_scaling=1.5305, vae_shift=0.0609,
    flow=True, max_prompt_tokens=256, default_steps=28, default_guidance=7.0, default_sampler="euler",
)
# Flux.1 dev is guidance-distilled: the number is embedded into one pass (no negative, no second pass).
FLUX_DEV = Family(
    name="flux-dev", label="Flux.1 dev", pipeline="FluxPipeline", config_repo=None,
    base=1024, max_pixels=2048 * 2048, multiple=16, latent_channels=16, packed=True,
    rgb_factors=_FLUX_RGB, rgb_bias=(-0.0329, -0.0718, -0.0851), vae_scaling=0.3611, vae_shift=0.1159,
    flow=True, guidance="distilled", negative=False, max_prompt_tokens=512,
    default_steps=28, default_guidance=3.5, default_sampler="euler",
)
# schnell is timestep-distilled: 4 steps, and it has no guidance at all (the number is ignored).
FLUX_SCHNELL = replace(
    FLUX_DEV, name="flux-schnell", label="Flux.1 schnell", guidance="none", max_prompt_tokens=256,
    default_steps=4, default_guidance=0.0,
)

FAMILIES: dict[str, Family] = {f.name: f for f in (SD15, SD2, SDXL, SD3, FLUX_SCHNELL, FLUX_DEV)}

# What `atelier tiny-model --family` and hub-id guesses accept beside the table's own names.
FAMILY_ALIASES: dict[str, str] = {"flux": "flux-dev", "xl": "sdxl"}


def family_of(name: str) -> Family:
    """The family called `name` (or an alias of it); KeyError names the known ones."""
    key = FAMILY_ALIASES.get(name, name)
    try:
        return FAMILIES[key]
    except KeyError:
        raise KeyError(f"unknown model family {name!r}: use one of {', '.join(FAMILIES)}") from None
