"""Live-preview projection cost per family, at each family's native size (CPU, one image):
ComfyUI's linear latent -> RGB factors (4x3 for SD, 16x3 for SD3 / Flux; Flux unpacks its 2x2-packed
tokens first). Prints the median and the minimum of 300 projections.

    .venv/bin/python bench/previews.py
"""

from __future__ import annotations

import sys
from pathlib import Path

# Run as a script, bench/ would be first on sys.path and its siblings (bench/queue.py) would shadow
# standard modules; put the repository root there instead.
sys.path[0] = str(Path(__file__).resolve().parents[1])

import time  # noqa: E402

import torch  # noqa: E402

from generation.families import FAMILIES  # noqa: E402
from generation.previews import latent_to_preview  # noqa: E402


def main() -> None:
    for name, family in FAMILIES.items():
        side = family.base
        latent = torch.randn(family.latent_channels, side // 8, side // 8)
        if family.packed:  # as the Flux pipeline holds it: (h/2 * w/2 tokens, 4 * channels)
            c, h, w = latent.shape
            latent = latent.view(c, h // 2, 2, w // 2, 2).permute(1, 3, 0, 2, 4).reshape(-1, 4 * c)
        times = []
        for i in range(310):
            start = time.perf_counter()
            latent_to_preview(latent, family, side, side)
            if i >= 10:  # warm-up
                times.append(time.perf_counter() - start)
        times.sort()
        print(f"{name:13s} {side}²: median {times[len(times) // 2] * 1000:.3f} ms, "
              f"min {times[0] * 1000:.3f} ms per preview")


if __name__ == "__main__":
    main()
