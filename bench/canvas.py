"""Canvas path overhead: a Zoom Out 2x (pad + mask + inpaint + overlay) against a plain img2img of the same
output size and the same denoising work, both through Engine.render as the worker calls it, on the tiny SD1.x
model (CPU). The canvas job runs at strength 1.0 over `steps` steps; the img2img at strength 1.0 too, so
both run the same number of UNet steps and the ratio is the canvas path's own cost (mask preparation,
masked latent blending each step, the overlay). Runs interleaved, median of N.

    .venv/bin/python bench/canvas.py [--runs 7] [--steps 8] [--side 256]
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path[0] = str(Path(__file__).resolve().parents[1])

import argparse  # noqa: E402
import dataclasses  # noqa: E402
import os  # noqa: E402
import statistics  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import numpy as np  # noqa: E402
from PIL import Image  # noqa: E402

from generation.canvas import CanvasAction, canvas_of  # noqa: E402
from generation.engine import Engine  # noqa: E402
from generation.models import ModelRegistry  # noqa: E402
from generation.request import Kind, RenderRequest  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=7)
    parser.add_argument("--steps", type=int, default=8)
    parser.add_argument("--side", type=int, default=256, help="source side; the zoomed canvas is twice that")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as data:
        engine = Engine(ModelRegistry([("tiny", "tiny")], Path(data), device="cpu"))
        parent = RenderRequest(prompt="a lighthouse", model="tiny", width=args.side, height=args.side,
                               steps=args.steps, guidance=7.0, sampler="euler", seeds=(1,))
        source = Image.fromarray(np.random.default_rng(0).integers(0, 256, (args.side, args.side, 3),
                                                                   dtype=np.uint8))
        canvas = canvas_of(parent, 0, "src", CanvasAction.ZOOM, family="sd15", seed=1, count=1)
        plain = dataclasses.replace(canvas, kind=Kind.IMG2IMG, box=None)
        jobs = {"img2img": plain, "canvas": canvas}
        for request in jobs.values():  # warm-up: pipelines built, first-call costs paid
            engine.render([request], [source])
        times: dict[str, list[float]] = {name: [] for name in jobs}
        for _ in range(args.runs):
            for name, request in jobs.items():
                start = time.perf_counter()
                engine.render([request], [source])
                times[name].append(time.perf_counter() - start)
    base = statistics.median(times["img2img"])
    over = statistics.median(times["canvas"])
    print(f"tiny sd15, {canvas.width}x{canvas.height}, {args.steps} steps, median of {args.runs}: "
          f"img2img {base * 1000:.0f} ms, canvas (zoom 2x) {over * 1000:.0f} ms, ratio {over / base:.2f}x")


if __name__ == "__main__":
    main()
