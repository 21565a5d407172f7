"""Per-call changes to shared pipeline modules for Midjourney's style flags, always undone after the call.

The UNet and VAE are shared by every pipeline built from them (`from_pipe`) and by every later job, so a
flag that changes them (`--tile`, `--stylize`) applies inside one `with applied(pipe, request):` and is
restored on the way out, even when the call fails or is cancelled. Only UNet families (SD 1.x, SD 2.x,
SDXL) have these knobs; validation refuses the flags for the others.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

from generation.request import RenderRequest

MAX_STYLIZE = 1000
MAX_CHAOS = 100
# --chaos 100 adds per-image noise of this many standard deviations of the prompt embedding.
CHAOS_SCALE = 0.5
# FreeU's published values (github.com/ChenyangSi/FreeU) per family: (b1, b2, s1, s2). b scales the
# backbone features up, s the skip features' low frequencies down.
_FREEU_FULL: dict[str, tuple[float, float, float, float]] = {
    "sd15": (1.5, 1.6, 0.9, 0.2),
    "sd2": (1.4, 1.6, 0.9, 0.2),
    "sdxl": (1.3, 1.4, 0.9, 0.2),
}


def freeu_factors(stylize: int, family: str) -> tuple[float, float, float, float]:
    """`--stylize` 0-1000 -> FreeU (b1, b2, s1, s2), the documented curve: linear from FreeU off at 0
    (every factor 1: the UNet unchanged) to the family's published FreeU values at 1000. Midjourney's
    default of 100 is thus a tenth of the way there; `--stylize 250` a quarter."""
    t = max(0, min(MAX_STYLIZE, stylize)) / MAX_STYLIZE
    full = _FREEU_FULL.get(family, _FREEU_FULL["sd15"])
    b1, b2, s1, s2 = (1 + t * (value - 1) for value in full)
    return b1, b2, s1, s2


@contextlib.contextmanager
def applied(pipe: Any, request: RenderRequest, family: str) -> Iterator[None]:
    """The request's `--tile` and `--stylize` on `pipe` for the duration of one call."""
    with contextlib.ExitStack() as stack:
        if request.tile:
            stack.enter_context(circular_padding(pipe))
        if request.stylize is not None and hasattr(pipe, "enable_freeu"):
            stack.enter_context(_freeu(pipe, freeu_factors(request.stylize, family)))
        yield


@contextlib.contextmanager
def circular_padding(pipe: Any) -> Iterator[None]:
    """Seamless tiles: every padded 2D convolution of the UNet and the VAE wraps around the image's
    edges, so the left edge continues the right and the top the bottom (in the latent and in pixels)."""
    import torch

    changed: list[tuple[Any, str]] = []
    try:
        for name in ("unet", "vae"):
            module = getattr(pipe, name, None)
            if module is None:
                continue
            for conv in module.modules():
                if isinstance(conv, torch.nn.Conv2d) and any(p > 0 for p in _padding(conv)):
                    changed.append((conv, conv.padding_mode))
                    conv.padding_mode = "circular"
        yield
    finally:
        for conv, mode in changed:
            conv.padding_mode = mode


def _padding(conv: Any) -> tuple[int, ...]:
    return (conv.padding,) if isinstance(conv.padding, int) else tuple(
        p for p in conv.padding if isinstance(p, int))


@contextlib.contextmanager
def _freeu(pipe: Any, factors: tuple[float, float, float, float]) -> Iterator[None]:
    b1, b2, s1, s2 = factors
    pipe.enable_freeu(s1=s1, s2=s2, b1=b1, b2=b2)
    try:
        yield
    finally:
        pipe.disable_freeu()


def chaos_jitter(args: dict[str, Any], rows: list[tuple[int, int]]) -> dict[str, Any]:
    """`--chaos` 0-100: more variety between the images of one job. `rows` holds each image's (seed,
    chaos). Each image's prompt embedding (and SDXL's pooled one) gets Gaussian noise drawn from its own
    seed, of chaos / 100 * CHAOS_SCALE times that embedding's standard deviation: the mapping is linear,
    0 changes nothing (bit for bit), and a reroll with the same seed is the same image, batched or alone.
    The negative prompt is left as it is."""
    import torch

    if not any(chaos > 0 for _, chaos in rows) or "prompt_embeds" not in args:
        return args
    out = dict(args)
    for key in ("prompt_embeds", "pooled_prompt_embeds"):
        embeds = args.get(key)
        if embeds is None:
            continue
        jittered = []
        for row, (seed, chaos) in zip(embeds, rows, strict=True):
            if chaos > 0:
                noise = torch.randn(row.shape, generator=torch.Generator("cpu").manual_seed(seed + 1_000_003))
                row = row + noise.to(row.device, row.dtype) * row.std() * (chaos / MAX_CHAOS * CHAOS_SCALE)
            jittered.append(row)
        out[key] = torch.stack(jittered)
    return out
