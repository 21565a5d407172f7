"""A process holding the database is SIGKILLed mid-render; a new one finishes every job once."""

from __future__ import annotations

import asyncio
import os
import signal
import sys
from pathlib import Path
from typing import Any

from generation.events import JobDone, JobEvent
from generation.request import RenderRequest
from generation.scheduler import JobOwner, Scheduler
from storage import BlobStore, Database

REPO = Path(__file__).resolve().parents[2]
WAIT_S = 180  # a hang guard only (the child pays for importing torch), never a timing assertion

CHILD = r"""
import asyncio, sys
from pathlib import Path
from generation.engine import Engine
from generation.events import JobProgress
from generation.models import ModelRegistry
from generation.scheduler import Scheduler
from storage import BlobStore, Database

async def main(db_path: str, blobs: str, data_dir: str) -> None:
    engine = Engine(ModelRegistry([("tiny", "tiny")], Path(data_dir), device="cpu"))
    engine.step_gate.close()  # the first job stays mid-render until the kill
    db = await Database.open(Path(db_path))
    scheduler = Scheduler(db, engine, BlobStore(Path(blobs)))
    events = scheduler.subscribe()
    await scheduler.start()
    async for event in events:
        if isinstance(event, JobProgress):
            print("rendering", event.job_id, flush=True)
            # Die inside an open write transaction, with a render in flight.
            async with db.connection.transaction() as conn:
                await conn.execute("INSERT INTO audit_log (action, created_at) VALUES ('half-done', 0)")
                print("holding", flush=True)
                await asyncio.sleep(3600)

asyncio.run(main(*sys.argv[1:4]))
"""


def _request(seed: int, steps: int) -> RenderRequest:
    return RenderRequest(
        prompt=f"a harbour at night {seed}",
        model="tiny",
        width=64,
        height=64,
        steps=steps,
        guidance=5.0,
        sampler="euler",
        seeds=(seed, seed + 1),
    )


async def test_sigkill_while_holding_the_database(
    tmp_path: Path, tiny_engine: Any, tiny_data_dir: Path
) -> None:
    db_path, blobs_dir = tmp_path / "atelier.db", tmp_path / "images"
    db = await Database.open(db_path)
    queue = Scheduler(db, tiny_engine, BlobStore(blobs_dir))  # never started: only queues
    ids = [await queue.submit(_request(i * 10, steps=4), JobOwner(i)) for i in range(3)]
    await db.close()

    env = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONPATH": str(REPO)}
    child = await asyncio.create_subprocess_exec(
        sys.executable,
        "-c",
        CHILD,
        str(db_path),
        str(blobs_dir),
        str(tiny_data_dir),
        cwd=REPO,
        env=env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.DEVNULL,
    )
    assert child.stdout is not None
    lines: list[str] = []
    try:
        async with asyncio.timeout(WAIT_S):
            while not lines or lines[-1] != "holding":
                line = await child.stdout.readline()
                assert line, f"child exited early: {lines}"
                lines.append(line.decode().strip())
    finally:
        child.send_signal(signal.SIGKILL)
        await child.wait()
    assert child.returncode == -signal.SIGKILL
    killed_job = int(lines[0].split()[1])
    assert killed_job == ids[0]

    db = await Database.open(db_path)
    try:
        job = await db.jobs.get(killed_job)
        assert job is not None and job.status == "running" and job.attempts == 1
        assert await db.audit.list(None) == []  # the open transaction died with the process

        scheduler = Scheduler(db, tiny_engine, BlobStore(blobs_dir))
        events = scheduler.subscribe()
        await scheduler.start()
        done: dict[int, JobEvent] = {}
        async with asyncio.timeout(WAIT_S):
            async for event in events:
                if isinstance(event, JobDone):
                    done[event.job_id] = event
                if set(done) == set(ids):
                    break
        await scheduler.stop()
        delivered = [await db.jobs.mark_delivered(j) for j in ids] + [
            await db.jobs.mark_delivered(j) for j in ids
        ]
        assert delivered == [True] * 3 + [False] * 3
        for job_id in ids:
            row = await db.jobs.get(job_id)
            assert row is not None and row.status == "done"
            assert [(im.index, im.seed) for im in await db.images.for_job(job_id)] == [
                (0, row.request["seeds"][0]),
                (1, row.request["seeds"][1]),
            ]
        rerun = await db.jobs.get(killed_job)
        assert rerun is not None and rerun.attempts == 2
    finally:
        await db.close()
