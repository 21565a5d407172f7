"""End-to-end cost of the bot around the engine, measured side by side in one run on the tiny model.

Prints:
- a 4-image 512x512 /imagine through sandbox + real discord.py + bot, ÷ the bare pipeline call with the
  same settings (goal <= 1.03);
- p50/p99 time from INTERACTION_CREATE to the acknowledgement over many /imagine calls (goal p99 <= 100 ms);
- max asyncio event-loop lag while renders run (goal <= 50 ms).

Run: .venv/bin/python bench/bot.py [--steps 20] [--runs 3] [--acks 60]
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bot.app import App
from bot.endpoint import restore
from generation.engine import Engine
from generation.models import ModelRegistry
from sandbox import Sandbox
from tests.bot.conftest import make_settings
from tests.bot.helpers import results


class LagMonitor:
    """Measures how late a 10 ms sleep wakes up: the event loop's worst stall."""

    def __init__(self) -> None:
        self.max_lag = 0.0
        self._task: asyncio.Task[None] | None = None

    async def _run(self) -> None:
        while True:
            start = time.perf_counter()
            await asyncio.sleep(0.01)
            self.max_lag = max(self.max_lag, time.perf_counter() - start - 0.01)

    def start(self) -> None:
        self._task = asyncio.create_task(self._run())

    def stop(self) -> None:
        assert self._task is not None
        self._task.cancel()


def bare_pipeline(engine: Engine, steps: int) -> float:
    pipe = engine.registry.pipeline(engine.registry.default.name)
    generators = [torch.Generator().manual_seed(7 + i) for i in range(4)]
    start = time.perf_counter()
    pipe(prompt=["a lighthouse at dusk"] * 4, negative_prompt=[""] * 4, width=512, height=512,
         num_inference_steps=steps, guidance_scale=7.0, generator=generators, output_type="pil")
    return time.perf_counter() - start


async def warm_engine(tmp: Path) -> Engine:
    """The tiny model loaded, warmed up, and one bare call made (warm caches for both sides)."""
    engine = Engine(ModelRegistry([("tiny", "tiny")], tmp / "engine", device="cpu"))
    # On the engine's torch thread, as the bot's renders: a call from any other thread would give the
    # process a second OpenMP team and slow both sides (generation/threads.py).
    await engine.call(engine.warm_up)
    await engine.call(bare_pipeline, engine, 2)
    return engine


async def start_bot(engine: Engine, sandbox: Sandbox, tmp: Path) -> App:
    """The sandbox started and a bot on it, sharing the warm engine; generous queue caps."""
    await sandbox.start()
    app = App(make_settings(sandbox, tmp / "data", ATELIER_QUEUE_MAX_PER_USER="500",
                            ATELIER_QUEUE_MAX_TOTAL="1000", ATELIER_LOG_LEVEL="WARNING"),
              engine=engine, guild_ready_timeout=0.2)
    await app.start()
    await app.wait_ready()
    return app


async def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--acks", type=int, default=60)
    args = parser.parse_args()

    tmp = Path(tempfile.mkdtemp(prefix="atelier-bench-"))
    engine = await warm_engine(tmp)
    sandbox = Sandbox()
    app = await start_bot(engine, sandbox, tmp)
    alice, general = sandbox.users["alice"], sandbox.channel("general")
    monitor = LagMonitor()
    monitor.start()

    bare: list[float] = []
    e2e: list[float] = []
    engine_in_bot: list[float] = []  # the worker's engine.render call
    encode_store: list[float] = []  # PNG encode + grid + blob files + SQLite, after the render
    deliver: list[float] = []  # from "done" in SQLite to the result visible in the sandbox
    for run in range(args.runs):
        # Side by side: the bare call, then the same job through the whole bot.
        bare.append(await engine.call(bare_pipeline, engine, args.steps))
        before = len(results(sandbox, general))
        start = time.perf_counter()
        interaction = await sandbox.slash(alice, general, "imagine", {
            "prompt": f"a lighthouse at dusk --seed {7 + run} --steps {args.steps} --n 4 --cfg 7 --ar 1:1"})
        await interaction.wait_ack()
        await sandbox.wait_for(lambda before=before: len(results(sandbox, general)) > before, timeout=600)
        e2e.append(time.perf_counter() - start)
        seen = time.time()
        assert app.services is not None
        job = (await app.services.db.jobs.list_for_user(alice.id, limit=1))[0]
        assert job.started_at is not None and job.finished_at is not None and job.render_seconds is not None
        engine_in_bot.append(job.render_seconds)
        encode_store.append(job.finished_at - job.started_at - job.render_seconds)
        deliver.append(seen - job.finished_at)
    render_lag = monitor.max_lag

    # Acknowledgement latency: queue many jobs while paused (the ack path is measured), then drop them.
    assert app.services is not None
    await app.services.scheduler.pause()
    latencies: list[float] = []
    for i in range(args.acks):
        interaction = await sandbox.slash(alice, general, "imagine", {"prompt": f"ack test {i} --steps 2"})
        await interaction.wait_ack()
        assert interaction.ack_latency is not None
        latencies.append(interaction.ack_latency)
    for entry in app.services.scheduler.snapshot():
        await app.services.scheduler.cancel(entry.job_id)
    monitor.stop()
    await app.stop()
    await sandbox.stop()
    restore()

    latencies.sort()
    p50 = statistics.median(latencies) * 1000
    p99 = latencies[min(len(latencies) - 1, int(0.99 * len(latencies)))] * 1000
    b, e = statistics.median(bare), statistics.median(e2e)
    print(f"4 x 512x512, {args.steps} steps, tiny model, {args.runs} runs (medians)")
    print(f"  bare pipeline call        {b:7.3f} s")
    print(f"  /imagine end to end       {e:7.3f} s   ratio {e / b:.3f}  (goal <= 1.03)")
    print(f"    of which engine.render in the worker  {statistics.median(engine_in_bot):7.3f} s")
    print(f"    of which encode + store after render  {statistics.median(encode_store):7.3f} s")
    print(f"    of which delivery to Discord          {statistics.median(deliver):7.3f} s")
    print(f"ack latency over {len(latencies)} /imagine: p50 {p50:.1f} ms, p99 {p99:.1f} ms"
          "  (goal p99 <= 100 ms)")
    print(f"max event-loop lag while rendering: {render_lag * 1000:.1f} ms  (goal <= 50 ms)")


if __name__ == "__main__":
    asyncio.run(main())
