"""A locked database or a full disk never strands a job: real SQLite files locked by a second connection,
the real tiny engine, a real tiny filesystem (a 256 KiB tmpfs) for the image files."""

from __future__ import annotations

import asyncio
import contextlib
import errno
import logging
import sqlite3
import subprocess
import threading
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest

from generation.events import JobDone, JobEvent, JobFailed, JobProgress
from generation.request import RenderRequest
from generation.scheduler import JobOwner, Scheduler
from storage import BlobStore, Database

WAIT_S = 120  # a hang guard only, never a timing assertion
BUSY_MS = 100  # the bot's connection gives up on a held lock after this (5 s in production)


def request(seed: int, *, steps: int = 2) -> RenderRequest:
    return RenderRequest(prompt=f"a quiet harbour {seed}", model="tiny", width=64, height=64, steps=steps,
                         guidance=5.0, sampler="euler", seeds=(seed,))


class WriteLock:
    """An EXCLUSIVE lock on the database file, taken by a second connection in another thread, as
    another process (a backup, a sqlite3 shell) would hold it."""

    def __init__(self, path: Path) -> None:
        self._conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False)

    async def hold(self) -> None:
        await asyncio.to_thread(self._conn.execute, "BEGIN EXCLUSIVE")

    async def release(self) -> None:
        if self._conn.in_transaction:
            await asyncio.to_thread(self._conn.execute, "ROLLBACK")

    def close(self) -> None:
        self._conn.close()


class Seen(logging.Handler):
    """The warnings an operator would read, used as a gate: "the step failed and will be retried"."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        super().__init__(logging.WARNING)
        self.messages: list[str] = []
        self._loop = loop
        self._changed = asyncio.Event()

    def emit(self, record: logging.LogRecord) -> None:  # from the loop or a worker thread
        self.messages.append(record.getMessage())
        self._loop.call_soon_threadsafe(self._changed.set)

    async def wait_for(self, text: str) -> None:
        async with asyncio.timeout(WAIT_S):
            while not any(text in m for m in self.messages):
                self._changed.clear()
                await self._changed.wait()


@pytest.fixture
async def seen() -> AsyncIterator[Seen]:
    handler = Seen(asyncio.get_running_loop())
    loggers = [logging.getLogger(name) for name in ("storage.retry", "generation.scheduler")]
    for logger in loggers:
        logger.addHandler(handler)
    yield handler
    for logger in loggers:
        logger.removeHandler(handler)


class GatedEngine:
    """The real tiny engine; each render, once done, waits for the test to open the gate (so the test
    can lock the database before the result is recorded, however fast the render was)."""

    def __init__(self, engine: Any) -> None:
        self.engine = engine
        self.rendered = threading.Event()
        self.gate = threading.Event()

    def render(self, requests: Any, sources: Any = None, **kw: Any) -> Any:
        out = self.engine.render(requests, sources, **kw)
        self.rendered.set()
        if not self.gate.wait(WAIT_S):
            raise RuntimeError("the test never opened the gate")
        return out

    def safety_checker(self, model: str) -> Any:
        return self.engine.safety_checker(model)

    async def call(self, fn: Any, *args: Any, **kw: Any) -> Any:
        return await self.engine.call(fn, *args, **kw)

    def settle(self) -> None:
        self.engine.settle()


@pytest.fixture
async def db(tmp_path: Path) -> AsyncIterator[Database]:
    database = await Database.open(tmp_path / "atelier.db", busy_timeout_ms=BUSY_MS)
    yield database
    await database.close()


async def final(events: Any, job_ids: set[int]) -> dict[int, JobEvent]:
    """Each job's final event."""
    out: dict[int, JobEvent] = {}
    async with asyncio.timeout(WAIT_S):
        async for event in events:
            if isinstance(event, JobDone | JobFailed) and event.job_id in job_ids:
                out[event.job_id] = event
            if set(out) == job_ids:
                return out
    raise AssertionError("event stream ended")


async def assert_done_with_images(db: Database, blobs: BlobStore, job_id: int) -> None:
    row = await db.jobs.get(job_id)
    assert row is not None and row.status == "done" and row.attempts == 1, row
    images = await db.images.for_job(job_id)
    assert [im.seed for im in images] == [row.request["seeds"][0]]
    assert all(blobs.exists(im.blob) for im in images)


@pytest.mark.parametrize("outlasts", ["worker-retries", "all-retries"])
async def test_a_locked_database_at_claim_delays_the_job_but_never_drops_it(
    outlasts: str, db: Database, tmp_path: Path, tiny_engine: Any, seen: Seen
) -> None:
    """worker-retries: the lock is gone before the worker's retries run out. all-retries: it outlasts
    them, so the scheduler must keep the job queued (before, it dropped it from the queue while the
    table still counted it against the member's cap, until a restart)."""
    blobs = BlobStore(tmp_path / "images")
    delays = (0.05,) * 200 if outlasts == "worker-retries" else (0.05,)
    scheduler = Scheduler(db, tiny_engine, blobs, max_queued_per_user=1, storage_retry_delays=delays)
    lock = WriteLock(db.path)
    try:
        events = scheduler.subscribe()
        await scheduler.pause()
        await scheduler.start()
        first = await scheduler.submit(request(1), JobOwner(7))
        await lock.hold()
        await scheduler.resume()
        await seen.wait_for("claim failed: database is locked; retrying"
                            if outlasts == "worker-retries" else "worker failed on jobs")
        await lock.release()
        assert isinstance((await final(events, {first}))[first], JobDone)
        await assert_done_with_images(db, blobs, first)
        # The cap of one queued job per member counts right: the finished job no longer holds it.
        second = await scheduler.submit(request(2), JobOwner(7))
        assert isinstance((await final(events, {second}))[second], JobDone)
    finally:
        await lock.release()
        lock.close()
        await scheduler.stop()


async def test_a_locked_database_when_the_result_is_recorded(db: Database, tmp_path: Path, tiny_engine: Any,
                                                            seen: Seen) -> None:
    """Before, a completion that failed left the job "rendering" until a restart."""
    blobs = BlobStore(tmp_path / "images")
    engine = GatedEngine(tiny_engine)
    scheduler = Scheduler(db, engine, blobs, storage_retry_delays=(0.05,) * 200)
    lock = WriteLock(db.path)
    try:
        events = scheduler.subscribe()
        await scheduler.start()
        job = await scheduler.submit(request(3), JobOwner(8))
        assert await asyncio.to_thread(engine.rendered.wait, WAIT_S)
        await lock.hold()
        engine.gate.set()
        await seen.wait_for(f"complete job {job} failed: database is locked; retrying")
        await lock.release()
        assert isinstance((await final(events, {job}))[job], JobDone)
        await assert_done_with_images(db, blobs, job)
    finally:
        engine.gate.set()
        await lock.release()
        lock.close()
        await scheduler.stop()


class FullDisk:
    """A real 256 KiB tmpfs holding the image files, filled to the last byte; `free()` makes room."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.filler = root / "filler"

    def fill(self) -> None:
        with self.filler.open("wb", buffering=0) as fh, contextlib.suppress(OSError):
            while True:
                fh.write(b"\0" * 512)

    def free(self) -> None:
        self.filler.unlink()


class FullBlobStore(BlobStore):
    """Only where mounting a tmpfs is not allowed: the write fails with the same ENOSPC."""

    full = True

    def put(self, data: bytes, suffix: str = ".png") -> str:
        if self.full:
            raise OSError(errno.ENOSPC, "No space left on device")
        return super().put(data, suffix)


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[tuple[BlobStore, Any]]:
    """(blob store on a full disk, a function that frees space)."""
    mount = tmp_path / "small"
    mount.mkdir()
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=256k", "tmpfs", str(mount)],
                             capture_output=True).returncode == 0
    if not mounted:
        store = FullBlobStore(mount / "images")

        def room() -> None:
            store.full = False

        yield store, room
        return
    try:
        blobs = BlobStore(mount / "images")
        disk = FullDisk(mount)
        disk.fill()
        yield blobs, disk.free
    finally:
        subprocess.run(["umount", str(mount)], check=False)


async def test_a_full_disk_fails_the_batch_once_with_a_clear_reason(
    db: Database, tiny_engine: Any, small_disk: tuple[BlobStore, Any]
) -> None:
    """Two members' jobs in one batch, nowhere to write their images: after the retries both fail with
    "the server's disk is full" (not "unexpected error"), each rendered once (the batch is not re-run
    job by job for a storage fault), and once there is room the queue keeps serving."""
    blobs, make_room = small_disk
    steps = 3
    scheduler = Scheduler(db, tiny_engine, blobs, max_batch=4, storage_retry_delays=(0.05, 0.1))
    try:
        events = scheduler.subscribe()
        await scheduler.pause()
        await scheduler.start()
        a = await scheduler.submit(request(4, steps=steps), JobOwner(1))
        b = await scheduler.submit(request(5, steps=steps), JobOwner(2))
        progress: dict[int, list[int]] = {a: [], b: []}
        await scheduler.resume()
        finals: dict[int, JobEvent] = {}
        async with asyncio.timeout(WAIT_S):
            async for event in events:
                if isinstance(event, JobProgress) and event.job_id in progress:
                    progress[event.job_id].append(event.step)
                if isinstance(event, JobDone | JobFailed) and event.job_id in progress:
                    finals[event.job_id] = event
                if len(finals) == 2:
                    break
        for job_id in (a, b):
            failed = finals[job_id]
            assert isinstance(failed, JobFailed), failed
            row = await db.jobs.get(job_id)
            assert row is not None and row.status == "failed"
            assert "the server's disk is full" in (row.error or "")
            # What the member watched: one progress bar from 1 to the end, never a second render.
            assert progress[job_id] == list(range(1, steps + 1)), progress

        make_room()
        after = await scheduler.submit(request(6), JobOwner(1))
        assert isinstance((await final(events, {after}))[after], JobDone)
        await assert_done_with_images(db, blobs, after)
    finally:
        await scheduler.stop()
