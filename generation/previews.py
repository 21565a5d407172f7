"""Cheap live previews: the x0 estimate of each step projected to RGB with a 4x3 linear map.

A VAE decode per step would cost more than the step itself; this costs well under a millisecond.
The factors are the ones ComfyUI uses (comfy/latent_formats.py) for SD1.x and SDXL latents.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import numpy as np
from PIL import Image

LATENT_RGB_FACTORS: dict[str, tuple[tuple[tuple[float, float, float], ...], tuple[float, float, float]]] = {
    "sd15": (
        (
            (0.3512, 0.2297, 0.3227),
            (0.3250, 0.4974, 0.2350),
            (-0.2829, 0.1762, 0.2721),
            (-0.2120, -0.2616, -0.7177),
        ),
        (0.0, 0.0, 0.0),
    ),
    "sdxl": (
        (
            (0.3651, 0.4232, 0.4341),
            (-0.2533, -0.0042, 0.1068),
            (0.1076, 0.1111, -0.0362),
            (-0.3165, -0.2492, -0.2188),
        ),
        (0.1084, -0.0175, -0.0011),
    ),
}


def latent_to_preview(latent: Any, family: str) -> Image.Image:
    """A (4, h, w) latent (torch tensor) as an RGB image at latent resolution (1/8 of the output)."""
    import torch

    factors, bias = LATENT_RGB_FACTORS[family]
    weight = torch.tensor(factors, dtype=torch.float32)
    x = latent.detach().to("cpu", torch.float32)
    rgb = torch.einsum("chw,cr->hwr", x, weight) + torch.tensor(bias)
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
    (DPM-Solver, UniPC, PNDM) it follows from the alpha schedule and the prediction type.
    """
    pred = getattr(step_output, "pred_original_sample", None)
    if pred is not None:
        return pred
    import torch

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
