"""Vary (Region) with a member's mask: what the mask costs beyond the cell editor's path, on CPU, timing the
calls the product makes. Bot side: `read_mask` (decode, threshold, resize to the image, checks) of an uploaded
PNG, against `decode_upload` of a same-size image (the img2img upload every /imagine image: pays). Engine
side, per image: `overlay` with a feather against the hard-edged overlay (feather 0). Interleaved, median
of N.

    .venv/bin/python bench/mask.py [--runs 9] [--side 1024]
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path[0] = str(Path(__file__).resolve().parents[1])

import argparse  # noqa: E402
import io  # noqa: E402
import statistics  # noqa: E402
import time  # noqa: E402
from collections.abc import Callable  # noqa: E402

import numpy as np  # noqa: E402
from PIL import Image, ImageDraw  # noqa: E402

from generation.canvas import overlay  # noqa: E402
from generation.images import decode_upload  # noqa: E402
from generation.masks import read_mask  # noqa: E402


def _png(image: Image.Image) -> bytes:
    buf = io.BytesIO()
    image.save(buf, format="PNG")
    return buf.getvalue()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=9)
    parser.add_argument("--side", type=int, default=1024)
    args = parser.parse_args()
    side = args.side
    rng = np.random.default_rng(0)
    photo = Image.fromarray(rng.integers(0, 256, (side, side, 3), np.uint8))
    rendered = Image.fromarray(rng.integers(0, 256, (side, side, 3), np.uint8))
    # A member's brush stroke, drawn at twice the image's size (a phone screenshot).
    drawn = Image.new("L", (2 * side, 2 * side), 0)
    ImageDraw.Draw(drawn).ellipse((side // 2, side // 2, side * 3 // 2, side * 5 // 4), fill=255)
    mask_png, photo_png = _png(drawn), _png(photo)
    mask = read_mask(mask_png, (side, side))

    cases: dict[str, Callable[[], object]] = {
        "decode_upload (image)": lambda: decode_upload(photo_png, side * side),
        "read_mask (mask 2x)": lambda: read_mask(mask_png, (side, side)),
        "overlay feather 0": lambda: overlay(rendered, photo, mask),
        "overlay feather 8": lambda: overlay(rendered, photo, mask, 8),
        "overlay feather 32": lambda: overlay(rendered, photo, mask, 32),
    }
    times: dict[str, list[float]] = {name: [] for name in cases}
    for _ in range(args.runs):
        for name, call in cases.items():
            start = time.perf_counter()
            call()
            times[name].append(time.perf_counter() - start)
    med = {name: statistics.median(t) for name, t in times.items()}
    print(f"{side}x{side}, median of {args.runs} (interleaved)")
    for name, value in med.items():
        print(f"  {name:24s} {value * 1000:8.1f} ms")
    print(f"read_mask / decode_upload: {med['read_mask (mask 2x)'] / med['decode_upload (image)']:.2f}x")
    hard = med["overlay feather 0"]
    for f in (8, 32):
        print(f"overlay feather {f} / feather 0: {med[f'overlay feather {f}'] / hard:.2f}x")


if __name__ == "__main__":
    main()
