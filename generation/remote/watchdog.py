"""The bot's watchdog over remote renders: a job SQLite holds as running must be somewhere, on a live
worker (its registry entry lists it), in the broker (its batch not yet acked) or ended by an event the
bot has yet to record. A job that is nowhere, twice in a row, was lost (a wiped broker store; a worker
that died after acking its batch; a batch published into a dying broker) and goes back to the queue with
its attempt refunded: the loss was not the job's fault.

At start-up the same check replaces "every running job is abandoned": a bot killed mid-render leaves
its jobs running on the workers, so it adopts them (waits for their events) instead of rendering them
again, and only requeues the ones the check finds lost.

Discord-free, like the dispatcher it watches.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable, Sequence

from generation.remote.dispatcher import RemoteBackend, _Pending
from generation.request import RenderRequest
from generation.worker import JobsLost
from storage.db import Database
from storage.retry import retry_async

log = logging.getLogger(__name__)

# Between two checks; a job is requeued at its second check found lost, so a batch between its claim
# and its publication (or a registry entry a heartbeat behind) is never mistaken for a lost one.
WATCHDOG_S = 5.0


class Watchdog:
    def __init__(self, backend: RemoteBackend, db: Database, *, lease_owner: str,
                 readmit: Callable[[Sequence[int]], Awaitable[None]], lease_seconds: float = 3600.0,
                 interval: float = WATCHDOG_S) -> None:
        self._backend = backend
        self._db = db
        self._lease_owner = lease_owner
        self._lease_seconds = lease_seconds
        self._readmit = readmit
        self._interval = interval
        self._suspects: set[int] = set()
        self._tasks: set[asyncio.Task[None]] = set()

    async def adopt(self) -> list[int]:
        """Before the scheduler starts (whose recovery would abandon them): lease every running job to
        this bot and record its events as they come. Returns the adopted job ids."""
        rows = await self._db.jobs.adopt_running(lease_owner=self._lease_owner,
                                                 lease_seconds=self._lease_seconds)
        jobs: list[tuple[int, RenderRequest]] = []
        for row in rows:
            try:
                jobs.append((row.id, RenderRequest.from_json(row.request)))
            except (KeyError, TypeError, ValueError):
                # Nobody waits for it: the check finds it lost and the scheduler fails it as unreadable.
                log.warning("running job %s has an unreadable request", row.id)
        if jobs:
            log.info("waiting for jobs %s that workers took before this start", [i for i, _ in jobs])
            pending = self._backend.adopt(jobs)
            self._spawn(self._collect(pending), "atelier-adopted-jobs")
        return [row.id for row in rows]

    def start(self) -> None:
        self._spawn(self._loop(), "atelier-watchdog")

    async def stop(self) -> None:
        # Adopted jobs stay running in the table: the next start adopts them again.
        for task in list(self._tasks):
            task.cancel()
            with contextlib.suppress(BaseException):
                await task

    def _spawn(self, work: Awaitable[None], name: str) -> None:
        task = asyncio.ensure_future(work)
        task.set_name(name)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _collect(self, pending: _Pending) -> None:
        runner = self._backend.active_runner
        assert runner is not None, "the scheduler builds its runner before the watchdog adopts"
        try:
            await runner.collect(pending, lambda: False, lambda _: False)
        except JobsLost as exc:
            log.warning("%s: back to the queue", exc)
            ids = sorted(pending.requests)
            await retry_async(lambda: self._db.jobs.requeue(ids, refund_attempt=True), f"requeue jobs {ids}")
            await self._readmit(ids)
        finally:
            self._backend.forget(list(pending.requests))

    async def _loop(self) -> None:
        while True:
            await asyncio.sleep(self._interval)
            try:
                await self.check()
            except Exception as exc:  # the broker away for a moment: the next check tries again
                log.warning("watchdog check failed: %s", type(exc).__name__)
                self._suspects.clear()

    async def check(self) -> list[int]:
        """One look at every running job; returns those found lost twice in a row (now handled)."""
        backend = self._backend
        if not backend.connected:
            self._suspects.clear()  # nothing can be known while the broker is away
            return []
        await backend.repair()  # a wiped broker: streams and the bot's consumer come back first
        running = [row.id for row in await self._db.jobs.list_active() if row.status == "running"]
        candidates = [i for i in running if i not in backend.busy_job_ids()]
        if candidates:
            held = await backend.held_job_ids()
            candidates = [i for i in candidates if i not in held]
        if candidates:
            ended = await backend.ended_job_ids(candidates)
            candidates = [i for i in candidates if i not in ended]
        lost = [i for i in candidates if i in self._suspects]
        self._suspects = set(candidates) - set(lost)
        if not lost:
            return []
        log.warning("jobs %s are on no worker and no longer in the broker", lost)
        waited = backend.waiting_for(lost)
        backend.lose(lost)
        # Running in the table with nobody waiting for them (e.g. an unreadable request adopted at start):
        # requeued here.
        orphans = [i for i in lost if i not in waited]
        if orphans:
            await retry_async(lambda: self._db.jobs.requeue(orphans, refund_attempt=True),
                              f"requeue jobs {orphans}")
            await self._readmit(orphans)
        return lost
