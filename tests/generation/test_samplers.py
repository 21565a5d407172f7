"""Sampler names members know -> the diffusers scheduler and config meant, and a render with each."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from generation.request import RenderRequest
from generation.samplers import SAMPLER_NAMES, SAMPLERS, make_scheduler, normalize_sampler, sampler_label

_DPM = "DPMSolverMultistepScheduler"
_PLAIN = {"use_karras_sigmas": False, "use_exponential_sigmas": False, "use_beta_sigmas": False}
_2M = {"algorithm_type": "dpmsolver++", "solver_order": 2, "euler_at_final": True,
       "final_sigmas_type": "zero"}
_2M_SDE = {**_2M, "algorithm_type": "sde-dpmsolver++"}
_3M_SDE = {**_2M_SDE, "solver_order": 3}
_KARRAS = {**_PLAIN, "use_karras_sigmas": True}
_EXP = {**_PLAIN, "use_exponential_sigmas": True, "timestep_spacing": "linspace"}

# label -> (diffusers class, config values), after diffusers' A1111/k-diffusion table.
EXPECTED: dict[str, tuple[str, dict[str, Any]]] = {
    "DPM++ 2M": (_DPM, {**_2M, **_PLAIN}),
    "DPM++ 2M Karras": (_DPM, {**_2M, **_KARRAS}),
    "DPM++ 2M SDE": (_DPM, {**_2M_SDE, **_PLAIN}),
    "DPM++ 2M SDE Karras": (_DPM, {**_2M_SDE, **_KARRAS}),
    "DPM++ 2M SDE Exponential": (_DPM, {**_2M_SDE, **_EXP}),
    "DPM++ SDE": ("DPMSolverSDEScheduler", {"use_karras_sigmas": False}),
    "DPM++ SDE Karras": ("DPMSolverSDEScheduler", {"use_karras_sigmas": True}),
    "DPM++ 3M SDE": (_DPM, {**_3M_SDE, **_PLAIN}),
    "DPM++ 3M SDE Karras": (_DPM, {**_3M_SDE, **_KARRAS}),
    "DPM++ 3M SDE Exponential": (_DPM, {**_3M_SDE, **_EXP}),
    "Euler": ("EulerDiscreteScheduler", {"use_karras_sigmas": False}),
    "Euler a": ("EulerAncestralDiscreteScheduler", {}),
    "Heun": ("HeunDiscreteScheduler", {"use_karras_sigmas": False}),
    "DPM2": ("KDPM2DiscreteScheduler", {"use_karras_sigmas": False}),
    "DPM2 Karras": ("KDPM2DiscreteScheduler", {"use_karras_sigmas": True}),
    "DPM2 a": ("KDPM2AncestralDiscreteScheduler", {"use_karras_sigmas": False}),
    "DPM2 a Karras": ("KDPM2AncestralDiscreteScheduler", {"use_karras_sigmas": True}),
    "LMS": ("LMSDiscreteScheduler", {"use_karras_sigmas": False}),
    "LMS Karras": ("LMSDiscreteScheduler", {"use_karras_sigmas": True}),
    "DDIM": ("DDIMScheduler", {}),
    "UniPC": ("UniPCMultistepScheduler", {"use_karras_sigmas": False}),
    "LCM": ("LCMScheduler", {}),
    "PNDM": ("PNDMScheduler", {"skip_prk_steps": True}),
}


def test_every_sampler_has_an_expectation_and_fits_discord_choices() -> None:
    assert sorted(sampler_label(n) for n in SAMPLER_NAMES) == sorted(EXPECTED)
    assert len(SAMPLER_NAMES) <= 25  # Discord's limit for an option's choices


@pytest.mark.parametrize("label", list(EXPECTED))
def test_label_builds_the_intended_scheduler(tiny_registry: Any, label: str) -> None:
    name = normalize_sampler(label)
    assert name is not None and sampler_label(name) == label
    cls, values = EXPECTED[label]
    # A model whose own config already carries a noise schedule and an algorithm (community SDXL checkpoints
    # ship DPM++ 2M SDE Karras configs) must not change what the label means.
    base = {**tiny_registry.scheduler_config("tiny"), "use_karras_sigmas": True,
            "algorithm_type": "sde-dpmsolver++", "solver_order": 3, "euler_at_final": False}
    scheduler = make_scheduler(name, base)
    assert type(scheduler).__name__ == cls
    assert {k: scheduler.config[k] for k in values} == values
    # The model's own schedule (betas) still comes through.
    assert scheduler.config.beta_schedule == "scaled_linear"


@pytest.mark.parametrize("name", SAMPLER_NAMES)
def test_two_step_render_with_each_sampler(tiny_engine: Any, name: str) -> None:
    request = RenderRequest(prompt="a lighthouse", model="tiny", width=64, height=64, steps=2, guidance=7.0,
                            sampler=name, seeds=(11,))
    [[image]] = tiny_engine.render([request])
    pixels = np.asarray(image).astype(float)
    assert image.size == (64, 64) and pixels.std() > 1.0  # a picture, not a NaN-black or flat frame
    assert type(tiny_engine.registry.pipeline("tiny").scheduler).__name__ == SAMPLERS[name].scheduler


@pytest.mark.parametrize(
    ("typed", "canonical"),
    [
        ("DPM++ 2M Karras", "dpmpp_2m_karras"),
        ("dpm++ 2m sde karras", "dpmpp_2m_sde_karras"),
        ("DPM++ SDE Karras", "dpmpp_sde_karras"),
        ("k_dpmpp_2m_ka", "dpmpp_2m_karras"),
        ("euler-a", "euler_a"),
        ("Euler a", "euler_a"),
        ("euler_ancestral", "euler_a"),
        # Names stored by earlier versions keep working.
        ("dpmpp_sde", "dpmpp_sde"),
        ("dpm++2m", "dpmpp_2m"),
        ("pndm", "pndm"),
        ("warp", None),
        ("", None),
    ],
)
def test_loose_spellings_and_stored_names(typed: str, canonical: str | None) -> None:
    assert normalize_sampler(typed) == canonical


def test_dpmpp_sde_noise_follows_each_images_seed(tiny_engine: Any) -> None:
    """DPM++ SDE's Brownian noise came from torch's global generator: the same seed gave other pixels on
    every run, and an image rendered in a batch differed from the same seed alone."""

    def render(seeds: tuple[int, ...]) -> list[np.ndarray]:
        request = RenderRequest(prompt="a lighthouse", model="tiny", width=64, height=64, steps=3,
                                guidance=7.0, sampler="dpmpp_sde_karras", seeds=seeds)
        return [np.asarray(im).astype(float) for im in tiny_engine.render([request])[0]]

    [alone] = render((21,))
    [again] = render((21,))
    assert np.array_equal(alone, again)
    _, second = render((20, 21))
    assert np.abs(second - alone).max() <= 1.0  # batched vs solo, CPU
    [other] = render((22,))
    assert not np.array_equal(alone, other)
