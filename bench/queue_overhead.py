"""Scheduler overhead per job vs the render itself, measured side by side in one run.

(Named queue_overhead.py, not queue.py: a bench/queue.py would shadow the standard library's
`queue` for every script run from bench/, and aiosqlite imports it.)

Same jobs three ways on the real tiny diffusers pipeline (CPU):
  1. the engine alone, one render() call per job (the floor);
  2. through Scheduler + worker + SQLite + PNG/blob store, max_batch=1;
  3. the same with max_batch=4 (1-image jobs from different users batch together).
Overhead per job = (wall time through the scheduler - engine time) / jobs. Also prints the
latency of submit() (what an /imagine waits for before its first reply).

    .venv/bin/python bench/queue_overhead.py [--jobs 120] [--size 64] [--steps 2]
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from generation.engine import Engine
from generation.events import JobDone, JobFailed
from generation.models import ModelRegistry
from generation.request import RenderRequest
from generation.scheduler import JobOwner, Scheduler
from storage import BlobStore, Database


def make_requests(n: int, size: int, steps: int) -> list[RenderRequest]:
    return [
        RenderRequest(
            prompt=f"a lighthouse at dusk, oil painting {i}",
            model="tiny",
            width=size,
            height=size,
            steps=steps,
            guidance=5.0,
            sampler="euler",
            seeds=(i,),
        )
        for i in range(n)
    ]


def engine_alone(engine: Engine, requests: list[RenderRequest]) -> float:
    started = time.perf_counter()
    for request in requests:
        engine.render([request])
    return time.perf_counter() - started


async def through_scheduler(
    engine: Engine, requests: list[RenderRequest], root: Path, max_batch: int
) -> tuple[float, float, list[float]]:
    """(wall seconds from resume to the last JobDone, engine seconds, submit latencies in ms)."""
    db = await Database.open(root / f"queue-{max_batch}.db")
    scheduler = Scheduler(
        db,
        engine,
        BlobStore(root / "blobs"),
        max_batch=max_batch,
        max_queued_per_user=10_000,
        max_queued_total=100_000,
    )
    events = scheduler.subscribe()
    await scheduler.start()
    await scheduler.pause()
    submits = []
    ids = set()
    for i, request in enumerate(requests):
        t = time.perf_counter()
        ids.add(await scheduler.submit(request, JobOwner(user_id=i % 16, guild_id=1)))
        submits.append((time.perf_counter() - t) * 1000)
    started = time.perf_counter()
    await scheduler.resume()
    finished = 0
    async for event in events:
        if isinstance(event, JobDone | JobFailed) and event.job_id in ids:
            assert isinstance(event, JobDone), event
            finished += 1
            if finished == len(ids):
                break
    wall = time.perf_counter() - started
    await scheduler.stop()
    # Engine time per batch is shared out over its jobs' render_seconds.
    row = await db.connection.fetchone("SELECT sum(render_seconds) FROM jobs")
    await db.close()
    assert row is not None
    return wall, float(row[0]), submits


async def run(args: argparse.Namespace) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        engine = Engine(ModelRegistry([("tiny", "tiny")], root / "models", device="cpu"))
        await asyncio.to_thread(engine.warm_up)
        requests = make_requests(args.jobs, args.size, args.steps)
        engine_alone(engine, requests[:8])  # warm caches
        alone = await asyncio.to_thread(engine_alone, engine, requests)
        print(f"{args.jobs} jobs, {args.size}x{args.size}, {args.steps} steps, 1 image each, 16 users\n")
        print(f"{'path':36} {'wall s':>8} {'per job ms':>11} {'engine ms':>10} {'overhead ms':>12}")
        per_job = alone / args.jobs * 1000
        print(f"{'engine alone (floor)':36} {alone:8.2f} {per_job:11.2f} {per_job:10.2f} {0:12.2f}")
        all_submits: list[float] = []
        for max_batch in (1, 4):
            wall, engine_s, submits = await through_scheduler(engine, requests, root, max_batch)
            all_submits += submits
            per = wall / args.jobs * 1000
            eng = engine_s / args.jobs * 1000
            name = f"scheduler, max_batch={max_batch}"
            print(f"{name:36} {wall:8.2f} {per:11.2f} {eng:10.2f} {per - eng:12.2f}")
        all_submits.sort()
        p99 = all_submits[int(len(all_submits) * 0.99)]
        print(f"\nsubmit() latency: p50 {statistics.median(all_submits):.2f} ms, p99 {p99:.2f} ms")
        print("overhead = everything but engine.render: claim/complete in SQLite, PNG encode + blob write,")
        print("events, fair-order bookkeeping.")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=120)
    parser.add_argument("--size", type=int, default=64)
    parser.add_argument("--steps", type=int, default=2)
    logging.basicConfig(level=logging.ERROR)
    asyncio.run(run(parser.parse_args()))


if __name__ == "__main__":
    main()
