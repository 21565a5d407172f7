"""Does other model work in the bot's process slow its renders? On CPU each thread that runs torch's
parallel ops gets its own OpenMP team, and a process holding two teams has libgomp throttle both
(generation/threads.py). The bot once warmed up in asyncio's default executor and rendered in its own
thread, so every render after start-up paid for it (bench/e2e.py: 1.4-1.6x the bare call).

Each case runs in a fresh process (a team, once started, stays), on the product's Engine and tiny model,
4 x 512²; best of N renders, each case against the first:
- main thread: Engine.render called on the main thread, the only thread that runs torch (as a bare call);
- engine: Engine.call(engine.render) on the engine's torch thread (warm-up there too), as the bot does now;
- engine + side work: the same after a caption-sized model call (the text encoder on 16 prompts) through
  Engine.side_call, as /describe and upload checks run now;
- engine + another thread: the same call in asyncio's default executor instead (the old bot's warm-up
  and upload checks).

Run: PYTHONPATH=. HF_HUB_OFFLINE=1 .venv/bin/python bench/render_thread.py [--steps 8] [--runs 3]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CASES = ("main thread", "engine", "engine + side work", "engine + another thread")


def run_case(case: str, steps: int, runs: int, data_dir: str) -> list[float]:
    import torch

    from generation.engine import Engine
    from generation.models import ModelRegistry
    from generation.request import RenderRequest

    registry = ModelRegistry([("tiny", "tiny")], Path(data_dir), device="cpu")
    request = RenderRequest(prompt="a lighthouse at dusk", model="tiny", width=512, height=512, steps=steps,
                            guidance=7.0, sampler="euler", seeds=(1, 2, 3, 4))
    if case == "main thread":
        engine = Engine(registry)
        engine.warm_up()
        times = []
        for _ in range(runs):
            start = time.perf_counter()
            engine.render([request])
            times.append(time.perf_counter() - start)
        return times

    async def main() -> list[float]:
        engine = Engine(registry)
        await engine.call(engine.warm_up)
        pipe = await engine.call(registry.pipeline, "tiny")

        def side_work() -> None:  # a caption-sized model call: the text encoder on a batch of prompts
            ids = pipe.tokenizer(["a lighthouse at dusk"] * 16, padding="max_length", return_tensors="pt")
            with torch.no_grad():
                pipe.text_encoder(ids.input_ids)
                pipe.vae.encode(torch.zeros(2, 3, 256, 256))

        if case == "engine + side work":
            await engine.side_call(side_work)
        elif case == "engine + another thread":
            await asyncio.to_thread(side_work)
        times = []
        for _ in range(runs):
            start = time.perf_counter()
            await engine.call(engine.render, [request])
            times.append(time.perf_counter() - start)
        return times

    return asyncio.run(main())


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--steps", type=int, default=8)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--case", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--data-dir", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.case is not None:
        print(json.dumps(run_case(args.case, args.steps, args.runs, args.data_dir)))
        return
    from generation.tiny import ensure_tiny_model

    data_dir = Path(tempfile.gettempdir()) / "atelier-render-thread"
    ensure_tiny_model(data_dir)
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONPATH": str(ROOT)}
    best: dict[str, float] = {}
    for _ in range(args.rounds):  # cases alternate, so a noisy neighbour hits each alike
        for case in CASES:
            out = subprocess.run([sys.executable, __file__, "--case", case, "--steps", str(args.steps),
                                  "--runs", str(args.runs), "--data-dir", str(data_dir)],
                                 env=env, capture_output=True, text=True, check=True)
            seconds = min(json.loads(out.stdout.strip().splitlines()[-1]))
            best[case] = min(best.get(case, seconds), seconds)
    print(f"bench/render_thread.py: 4 x 512², {args.steps} steps, tiny model, every core "
          f"({os.cpu_count()}), best of {args.runs} x {args.rounds} rounds; load average "
          f"{' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    for case in CASES:
        print(f"  {case:<26} {best[case]:.3f} s  ratio {best[case] / best['main thread']:.2f}")


if __name__ == "__main__":
    main()
