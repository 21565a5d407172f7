"""/describe figures, measured side by side in one run (CPU by default), through the calls the product makes:
Captioner.describe (what /describe runs in a thread) and Engine.render (what the worker runs).

1. one describe alone (median of --runs);
2. a render alone vs the same render while describes run in another thread: what captioning costs the
   renders sharing the machine (it never waits for them: its own model and lock), and the describe latency
   while a render runs.

    .venv/bin/python bench/describe.py [--captioner tiny|tiny-florence|HUB_ID|FOLDER] [--size 512]
                                       [--steps 4] [--images 4] [--runs 5]

On a shared CPU, set OMP_NUM_THREADS=1: two threads each with a full OpenMP team oversubscribe the cores
and the figures turn to noise (a render "alone" measured slower than the same render beside captioning).
"""

from __future__ import annotations

import sys
from pathlib import Path

# Run as a script, bench/ would be first on sys.path; put the repository root there instead.
sys.path[0] = str(Path(__file__).resolve().parents[1])

import argparse  # noqa: E402
import os  # noqa: E402
import statistics  # noqa: E402
import tempfile  # noqa: E402
import threading  # noqa: E402
import time  # noqa: E402

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from PIL import Image  # noqa: E402

from generation.caption import Captioner  # noqa: E402
from generation.engine import Engine  # noqa: E402
from generation.models import ModelRegistry  # noqa: E402
from generation.request import RenderRequest  # noqa: E402


def _timed(call: object, *args: object) -> float:
    started = time.perf_counter()
    call(*args)  # type: ignore[operator]
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--captioner", default="tiny")
    parser.add_argument("--size", type=int, default=512)
    parser.add_argument("--steps", type=int, default=4)
    parser.add_argument("--images", type=int, default=4)
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        data = Path(tmp)
        engine = Engine(ModelRegistry([("tiny", "tiny")], data, device="cpu"))
        captioner = Captioner(args.captioner, data, device="cpu")
        request = RenderRequest(prompt="a lighthouse at dusk", model="tiny", width=args.size,
                                height=args.size, steps=args.steps, guidance=7.0, sampler="euler",
                                seeds=tuple(range(args.images)))
        photo = Image.new("RGB", (640, 427), (40, 120, 200))
        engine.render([request])  # warm both: first calls pay loading and one-off allocations
        captioner.describe(photo)

        # 1. Describe alone.
        alone = [_timed(captioner.describe, photo) for _ in range(args.runs)]
        # 2. Render alone vs render while a thread describes back to back; interleaved against drift.
        render_alone, render_shared, describe_shared = [], [], []
        def shared_render() -> None:
            stop = threading.Event()

            def describe_loop() -> None:
                while not stop.is_set():
                    describe_shared.append(_timed(captioner.describe, photo))

            worker = threading.Thread(target=describe_loop)
            worker.start()
            render_shared.append(_timed(engine.render, [request]))
            stop.set()
            worker.join()

        # Interleaved, and the order flips each run: idle OpenMP threads of the describing thread spin for a
        # while after it stops, which would otherwise always land on the same side.
        for run in range(args.runs):
            if run % 2:
                shared_render()
            render_alone.append(_timed(engine.render, [request]))
            if not run % 2:
                shared_render()

        d, ra, rs = (statistics.median(x) for x in (alone, render_alone, render_shared))
        ds = statistics.median(describe_shared)
        print(f"captioner {args.captioner}: describe alone {d * 1000:.0f} ms (median of {args.runs})")
        print(f"render {args.images}x{args.size}², {args.steps} steps: alone {ra:.3f} s, while describing "
              f"{rs:.3f} s: {rs / ra:.2f}x; describe during renders {ds * 1000:.0f} ms: {ds / d:.2f}x "
              f"({len(describe_shared)} describes)")


if __name__ == "__main__":
    main()
