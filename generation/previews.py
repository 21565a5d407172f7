"""Cheap live previews: the x0 estimate of each step projected to RGB with a linear map.

A VAE decode per step would cost more than the step itself; this costs well under a millisecond.
The factors are the ones ComfyUI uses (comfy/latent_formats.py), per family (generation/families.py):
4x3 for SD latents, 16x3 for SD3 / Flux.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import numpy as np
from PIL import Image

from generation.families import Family, family_of


def unpack_latent(latent: Any, family: Family, width: int, height: int) -> Any:
    """One image's latent as (C, h, w): Flux carries it as (h/2 * w/2, 4C) tokens of 2x2 patches."""
    if not family.packed:
        return latent
    h, w = 2 * (height // 16), 2 * (width // 16)
    tokens, packed = latent.shape
    if tokens != (h // 2) * (w // 2):
        raise ValueError(f"{tokens} latent tokens do not fit a {width}x{height} image")
    x = latent.view(h // 2, w // 2, packed // 4, 2, 2)
    return x.permute(2, 0, 3, 1, 4).reshape(packed // 4, h, w)


def latent_to_preview(latent: Any, family: Family | str, width: int = 0, height: int = 0) -> Image.Image:
    """One image's latent (torch tensor, as the denoising loop holds it) as an RGB image at latent
    resolution (1/8 of the output). `width` / `height` (the output size) are needed for packed latents."""
    import torch

    fam = family_of(family) if isinstance(family, str) else family
    x = unpack_latent(latent.detach().to("cpu", torch.float32), fam, width, height)
    weight = torch.tensor(fam.rgb_factors, dtype=torch.float32)
    rgb = torch.einsum("chw,cr->hwr", x, weight) + torch.tensor(fam.rgb_bias)
    array = ((rgb.clamp(-1, 1) + 1) * 127.5).to(torch.uint8).numpy()
    return Image.fromarray(np.ascontiguousarray(array), "RGB")


class PreviewThrottle:
    """Whether a step should make a preview: at most one per `interval_s` of wall clock, plus the first
    and last steps of a call. Making one copies the latent to the host, a device sync that stalls the
    queued GPU work; Discord shows an edit only every ~1.5 s, so a preview per step was mostly wasted."""

    def __init__(self, interval_s: float, clock: Callable[[], float] = time.monotonic) -> None:
        self.interval_s = interval_s
        self._clock = clock
        self._last: float | None = None

    def due(self, step_index: int, total_steps: int) -> bool:
        now = self._clock()
        last_step = step_index + 1 >= total_steps
        if self._last is not None and not last_step and now - self._last < self.interval_s:
            return False
        self._last = now
        return True


def placeholder(width: int, height: int) -> Image.Image:
    """What a request shows before its first step (its batch slice may not have started yet)."""
    return Image.new("RGB", (max(1, width // 8), max(1, height // 8)), (40, 40, 40))


def x0_estimate(scheduler: Any, model_output: Any, timestep: Any, sample: Any, step_output: Any) -> Any:
    """The denoised estimate behind one scheduler step.

    Most schedulers return it as `pred_original_sample`; for the multistep ones that don't
    (DPM-Solver, UniPC, PNDM) it follows from the alpha schedule and the prediction type, and for
    flow matching (SD3, Flux) from sigma and the predicted velocity.
    """
    pred = getattr(step_output, "pred_original_sample", None)
    if pred is None and isinstance(step_output, tuple) and len(step_output) == 2:
        # Pipelines call step(..., return_dict=False): Euler, Euler a and DDIM then return
        # (prev_sample, pred_original_sample); the alpha formula below would misread their sigma-space sample.
        pred = step_output[1]
    if pred is not None:
        return pred
    import torch

    if type(scheduler).__name__.startswith("FlowMatch"):
        # Flow matching predicts the velocity noise - x0 along x_t = (1 - sigma) x0 + sigma noise, and its
        # timesteps are sigma * num_train_timesteps.
        t = float(timestep.item() if hasattr(timestep, "item") else timestep)
        sigma = t / scheduler.config.num_train_timesteps
        return sample.float() - sigma * model_output.float()

    alphas = getattr(scheduler, "alphas_cumprod", None)
    if alphas is None:
        return sample
    t = int(timestep.item() if hasattr(timestep, "item") else timestep)
    t = max(0, min(t, len(alphas) - 1))
    a = alphas[t].to(sample.device, torch.float32)
    x = sample.float()
    out = model_output.float()
    kind = getattr(scheduler.config, "prediction_type", "epsilon")
    if kind == "v_prediction":
        return a.sqrt() * x - (1 - a).sqrt() * out
    if kind == "sample":
        return out
    return (x - (1 - a).sqrt() * out) / a.sqrt()
