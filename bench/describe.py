"""/describe figures, measured side by side in one run (CPU by default), on the threads the product uses:
Captioner.describe on the engine's side thread (Engine.side_call, as /describe runs it) and Engine.render on
its torch thread (Engine.call, as the worker runs it).

1. one describe alone (median of --runs);
2. a render alone vs the same render while describes run back to back on the side thread: what captioning
   costs the renders sharing the machine (it never waits for them: its own thread and model), and the
   describe latency while a render runs.

    .venv/bin/python bench/describe.py [--captioner tiny|tiny-florence|HUB_ID|FOLDER] [--size 512]
                                       [--steps 4] [--images 4] [--runs 5]
"""

from __future__ import annotations

import sys
from pathlib import Path

# Run as a script, bench/ would be first on sys.path; put the repository root there instead.
sys.path[0] = str(Path(__file__).resolve().parents[1])

import argparse  # noqa: E402
import asyncio  # noqa: E402
import os  # noqa: E402
import statistics  # noqa: E402
import tempfile  # noqa: E402

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from PIL import Image  # noqa: E402

from bench.common import engine_parser, timed  # noqa: E402
from generation.caption import Captioner  # noqa: E402
from generation.engine import Engine  # noqa: E402
from generation.models import ModelRegistry  # noqa: E402
from generation.request import RenderRequest  # noqa: E402


def main() -> None:
    parser = engine_parser(__doc__)
    parser.add_argument("--captioner", default="tiny")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        data = Path(tmp)
        engine = Engine(ModelRegistry([("tiny", "tiny")], data, device="cpu"))
        captioner = Captioner(args.captioner, data, device="cpu")
        request = RenderRequest(prompt="a lighthouse at dusk", model="tiny", width=args.size,
                                height=args.size, steps=args.steps, guidance=7.0, sampler="euler",
                                seeds=tuple(range(args.images)))
        photo = Image.new("RGB", (640, 427), (40, 120, 200))
        asyncio.run(measure(engine, captioner, request, photo, args))


async def measure(engine: Engine, captioner: Captioner, request: RenderRequest, photo: Image.Image,
                  args: argparse.Namespace) -> None:
    # Warm both: first calls pay loading and one-off allocations. Each is timed on its own thread.
    await engine.call(engine.render, [request])
    await engine.side_call(captioner.describe, photo)

    # 1. Describe alone.
    alone = [await engine.side_call(timed, captioner.describe, photo) for _ in range(args.runs)]
    # 2. Render alone vs render while the side thread describes back to back; interleaved against drift.
    render_alone: list[float] = []
    render_shared: list[float] = []
    describe_shared: list[float] = []

    async def shared_render() -> None:
        stop = asyncio.Event()

        async def describe_loop() -> None:
            while not stop.is_set():
                describe_shared.append(await engine.side_call(timed, captioner.describe, photo))

        describing = asyncio.create_task(describe_loop())
        render_shared.append(await engine.call(timed, engine.render, [request]))
        stop.set()
        await describing

    for run in range(args.runs):
        if run % 2:
            await shared_render()
        render_alone.append(await engine.call(timed, engine.render, [request]))
        if not run % 2:
            await shared_render()

    d, ra, rs = (statistics.median(x) for x in (alone, render_alone, render_shared))
    ds = statistics.median(describe_shared)
    print(f"captioner {args.captioner}: describe alone {d * 1000:.0f} ms (median of {args.runs})")
    print(f"render {args.images}x{args.size}², {args.steps} steps: alone {ra:.3f} s, while describing "
          f"{rs:.3f} s: {rs / ra:.2f}x; describe during renders {ds * 1000:.0f} ms: {ds / d:.2f}x "
          f"({len(describe_shared)} describes)")


if __name__ == "__main__":
    main()
