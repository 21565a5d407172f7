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
from functools import partial

from generation.remote.dispatcher import RemoteBackend, RemoteRunner, _Pending
from generation.request import RenderRequest
from generation.scheduler import Collect
from generation.worker import BatchOutcome
from storage.db import Database
from storage.jobs import JobRow
from storage.retry import retry_async

log = logging.getLogger(__name__)

# The scheduler's take_over: a batch already on a worker becomes one of its flights.
TakeOver = Callable[[Sequence[JobRow], str, Collect], None]

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
        # Adopted at start, until start() hands them to the scheduler: (model, rows, their events).
        self._adopted: list[tuple[str, list[JobRow], _Pending]] = []

    async def adopt(self) -> list[int]:
        """Before the scheduler starts (whose recovery would abandon them): lease every running job to
        this bot and wait for its events (they queue up until start() hands the jobs to the scheduler).
        Returns the adopted job ids."""
        rows = await self._db.jobs.adopt_running(lease_owner=self._lease_owner,
                                                 lease_seconds=self._lease_seconds)
        by_model: dict[str, list[JobRow]] = {}
        for row in rows:
            try:
                model = RenderRequest.from_json(row.request).model
            except (KeyError, TypeError, ValueError):
                # Nobody waits for it: the check finds it lost and the scheduler fails it as unreadable.
                log.warning("running job %s has an unreadable request", row.id)
                continue
            by_model.setdefault(model, []).append(row)
        for model, group in by_model.items():
            log.info("waiting for jobs %s that workers took before this start", [r.id for r in group])
            # One flight per model: which batch each job rode in is not kept, so a model's adopted jobs
            # hold one slot of its workers until they end.
            pending = self._backend.adopt([(r.id, RenderRequest.from_json(r.request)) for r in group])
            self._adopted.append((model, group, pending))
        return [row.id for row in rows]

    def start(self, take_over: TakeOver) -> None:
        """After the scheduler started: the adopted jobs become its flights (shown in /queue, cancellable,
        holding their workers' slots), then the checks begin."""
        runner = self._backend.active_runner
        assert runner is not None, "the scheduler builds its runner before the watchdog starts"
        for model, rows, pending in self._adopted:
            take_over(rows, model, partial(self._collect, runner, pending))
        self._adopted.clear()
        self._spawn(self._loop(), "atelier-watchdog")

    async def stop(self) -> None:
        for task in list(self._tasks):
            task.cancel()
            with contextlib.suppress(BaseException):
                await task
        for _, rows, _ in self._adopted:  # never handed over (a start that failed): nobody waits for them
            self._backend.forget([r.id for r in rows])
        self._adopted.clear()

    def _spawn(self, work: Awaitable[None], name: str) -> None:
        task = asyncio.ensure_future(work)
        task.set_name(name)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _collect(self, runner: RemoteRunner, pending: _Pending, should_stop: Callable[[], bool],
                       is_cancelled: Callable[[int], bool]) -> BatchOutcome | None:
        # A JobsLost goes up to the scheduler, which requeues the unfinished jobs (attempt refunded).
        try:
            return await runner.collect(pending, should_stop, is_cancelled)
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
