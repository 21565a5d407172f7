"""IP-Adapter reference figures, measured side by side in one run on the tiny model (CPU) and its tiny
adapter, through Engine.render (the call the worker makes):

1. the extra cost of an image reference per image: the same batch plain vs with one --sref (embedding
   cached, as for every job after the first that uses the image), interleaved, median of --runs;
2. the first use of a reference image (encoder + cache write) vs a cached one, and the first load of the
   adapter into the UNet;
3. switching: batches alternating plain / reference vs the same kind each time (processors swapped per call).

    .venv/bin/python bench/references.py [--size 512] [--steps 4] [--images 4] [--runs 5]
"""

from __future__ import annotations

import sys
from pathlib import Path

# Run as a script, bench/ would be first on sys.path; put the repository root there instead.
sys.path[0] = str(Path(__file__).resolve().parents[1])

import os  # noqa: E402
import statistics  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from PIL import Image  # noqa: E402

from bench.common import engine_parser, timed_renders  # noqa: E402
from generation.engine import Engine  # noqa: E402
from generation.images import encode_upload  # noqa: E402
from generation.models import ModelRegistry  # noqa: E402
from generation.references import STYLE  # noqa: E402
from generation.request import RenderRequest  # noqa: E402
from generation.tiny import IP_ADAPTER_FOLDER, ensure_tiny_model  # noqa: E402
from storage.blobs import BlobStore  # noqa: E402


def _req(size: int, steps: int, images: int, refs: tuple[tuple[str, str, float], ...] = ()) -> RenderRequest:
    return RenderRequest(prompt="a lighthouse at dusk", model="tiny", width=size, height=size, steps=steps,
                         guidance=7.0, sampler="euler", seeds=tuple(range(images)), references=refs)


def main() -> None:
    parser = engine_parser(__doc__)
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        data = Path(tmp)
        adapter = ensure_tiny_model(data) / IP_ADAPTER_FOLDER
        blobs = BlobStore(data / "images")
        registry = ModelRegistry([("tiny", f"tiny?ip_adapter={adapter}")], data, device="cpu")
        engine = Engine(registry, blobs=blobs)
        keys = [blobs.put(encode_upload(Image.new("RGB", (256, 256), (40 * i, 90, 200 - 40 * i))))
                for i in range(3)]
        plain = _req(args.size, args.steps, args.images)
        engine.render([plain])  # warm: first call pays one-off allocations

        # 2. First load of the adapter, first use of an image (encode + cache write), then a cached image.
        started = time.perf_counter()
        engine.registry.use_references("tiny", ((STYLE, keys[0], 1.0),))
        load_s = time.perf_counter() - started
        one = _req(args.size, args.steps, 1)
        first = timed_renders(engine, _req(args.size, args.steps, 1, ((STYLE, keys[1], 1.0),)))
        cached = timed_renders(engine, _req(args.size, args.steps, 1, ((STYLE, keys[1], 1.0),)))
        solo = timed_renders(engine, one)
        print(f"adapter first load {load_s * 1000:.0f} ms; one image: plain {solo:.3f} s, reference first "
              f"use {first:.3f} s, cached {cached:.3f} s (encode + cache write "
              f"{(first - cached) * 1000:+.0f} ms)")

        # 1. Plain vs one reference, interleaved so load drift hits both.
        styled = _req(args.size, args.steps, args.images, ((STYLE, keys[1], 1.0),))
        plain_s, ref_s = [], []
        for _ in range(args.runs):
            plain_s.append(timed_renders(engine, plain))
            ref_s.append(timed_renders(engine, styled))
        p, r = statistics.median(plain_s), statistics.median(ref_s)
        print(f"{args.images}x{args.size}², {args.steps} steps, median of {args.runs}: plain {p:.3f} s, "
              f"--sref {r:.3f} s: {r / p:.2f}x ({(r - p) / args.images * 1000:+.0f} ms per image)")

        # 3. Switching on and off between batches vs staying.
        content = _req(args.size, args.steps, args.images, (("character", keys[2], 1.0),))
        same, alternating = [], []
        for _ in range(args.runs):
            same.append(timed_renders(engine, styled, styled, styled))
            alternating.append(timed_renders(engine, plain, styled, content))
        s, a = statistics.median(same), statistics.median(alternating)
        print(f"three batches, median of {args.runs}: same reference {s:.3f} s, plain / --sref / --cref "
              f"{a:.3f} s: {a / s:.2f}x ({(a - s) / 3 * 1000:+.0f} ms per batch)")


if __name__ == "__main__":
    main()
