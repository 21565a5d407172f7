"""Which encoding makes the grid visible first: time and size of a 1024² grid in each candidate format,
side by side, with the stored lossless PNG (compress_level 4) as the reference. Two grids: the tiny
model's output (near noise, the worst case for every codec) and a smooth, photo-like one (real models).

    .venv/bin/python bench/grid_formats.py [--repeat 7]
"""

from __future__ import annotations

import argparse
import io
import os
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from generation.images import encode_fast_grid


def grids() -> dict[str, Image.Image]:
    rng = np.random.default_rng(7)
    noise = rng.integers(0, 256, (1024, 1024, 3), dtype=np.uint8)
    y, x = np.mgrid[0:1024, 0:1024] / 1024.0
    low = rng.normal(0, 1, (16, 16, 3))
    smooth_noise = np.kron(low, np.ones((64, 64, 1)))
    smooth = (np.stack([x, y, (x + y) / 2], axis=-1) * 200 + smooth_noise * 15
              + rng.normal(0, 3, (1024, 1024, 3)))
    return {"tiny model (noise)": Image.fromarray(noise, "RGB"),
            "smooth (photo-like)": Image.fromarray(np.clip(smooth, 0, 255).astype(np.uint8), "RGB")}


def save(fmt: str, **kw: object) -> Callable[[Image.Image], bytes]:
    def run(image: Image.Image) -> bytes:
        buf = io.BytesIO()
        image.save(buf, format=fmt, **kw)
        return buf.getvalue()
    return run


CANDIDATES: dict[str, Callable[[Image.Image], bytes]] = {
    "PNG level 4 (stored)": save("PNG", compress_level=4),
    "PNG level 1": save("PNG", compress_level=1),
    "WebP q90 method 0": save("WEBP", quality=90, method=0),
    "JPEG q90": save("JPEG", quality=90),
    "JPEG q90 (encode_fast_grid)": encode_fast_grid,
}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--repeat", type=int, default=7)
    args = parser.parse_args()
    print(f"1024² grid, best of {args.repeat}; load average {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    for name, image in grids().items():
        print(name)
        reference = None
        for label, encode in CANDIDATES.items():
            times = []
            for _ in range(args.repeat):
                start = time.perf_counter()
                data = encode(image)
                times.append(time.perf_counter() - start)
            best = min(times)
            reference = reference or best
            print(f"  {label:30} {best * 1000:7.1f} ms  ({best / reference:.2f} of the stored PNG)"
                  f"  {len(data) / 1e6:6.2f} MB")


if __name__ == "__main__":
    main()
