"""The fair, durable job queue (the scheduler).

The jobs table is the source of truth: `start()` rebuilds every bit of in-memory state from it
(queued jobs in id order, render-time averages from recent jobs). This module decides what runs next,
answers "where am I in the queue", and fans events out to subscribers. A batch starts only when its
runner says it can (BatchRunner.can_start): the in-process worker (generation.worker) runs one batch at
a time in its own thread; remote workers (generation.remote) take as many as their free slots, each
batch in flight on its own task, so the broker never holds work out of the fair order. The fair order
itself (round-robin, weights, batching companions, per-model capacity) is the pure structure in
generation.fair_queue.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
import uuid
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from functools import partial
from typing import Any, Literal

from generation.errors import QueueFull
from generation.events import EventStream, JobCancelled, JobDone, JobEvent, JobFailed, JobQueued, JobStarted
from generation.fair_queue import FairQueue, Ticket
from generation.request import RenderRequest
from generation.worker import (
    BatchJob,
    BatchOutcome,
    BatchRunner,
    JobsLost,
    RenderBackend,
    RunnerFactory,
    Worker,
)
from storage.blobs import BlobStore
from storage.db import Database
from storage.jobs import CapExceeded, JobRow
from storage.retry import DEFAULT_DELAYS, retry_async

log = logging.getLogger(__name__)

# How often a scheduler whose next jobs cannot start yet looks again (a remote worker came online).
CAPACITY_POLL_S = 1.0
# Records the end of a batch that is already on a renderer (take_over): given the flight's stop check and
# its members' cancels, like BatchRunner.run.
Collect = Callable[[Callable[[], bool], Callable[[int], bool]], Awaitable[BatchOutcome | None]]


@dataclass(frozen=True)
class JobOwner:
    user_id: int
    guild_id: int | None = None
    channel_id: int | None = None


@dataclass(frozen=True)
class QueueEntry:
    """One queued or running job as /queue shows it. position 0 = rendering now."""

    job_id: int
    user_id: int
    guild_id: int | None
    channel_id: int | None
    status: Literal["queued", "running"]
    position: int
    eta_s: float
    request: dict[str, Any]
    priority: float
    private: bool
    # Queued in a guild whose moderators paused the queue: it keeps its place in the table but is
    # out of the fair order until they resume.
    paused: bool = False


@dataclass
class _Flight:
    """One batch handed to the runner and not yet ended."""

    ids: list[int]
    model: str
    since: float
    estimate: float
    task: asyncio.Task[None] | None = None

    def remaining(self) -> float:
        return max(0.0, self.estimate - (time.monotonic() - self.since))


@dataclass
class _Job:
    job_id: int
    owner: JobOwner
    request: dict[str, Any]
    batch_key: str
    images: int
    priority: float
    private: bool


def batch_key_text(request: RenderRequest) -> str:
    return json.dumps(list(request.batch_key), separators=(",", ":"))


class Scheduler:
    """Fair, durable job queue in front of one render worker. See the module docstring."""

    MAX_ATTEMPTS = 3
    DEFAULT_SECONDS_PER_IMAGE = 5.0
    EMA_ALPHA = 0.3

    def __init__(
        self,
        db: Database,
        engine: RenderBackend | None,
        blobs: BlobStore,
        *,
        max_batch: int = 4,
        max_queued_per_user: int = 5,
        max_queued_total: int = 200,
        lease_seconds: float = 3600.0,
        storage_retry_delays: Sequence[float] = DEFAULT_DELAYS,
        runner: RunnerFactory | None = None,
    ) -> None:
        self.db = db
        self.engine = engine
        self.blobs = blobs
        # Counted in images, not jobs: what a pipeline call must hold in memory is images.
        self.max_batch = max_batch
        self.max_queued_per_user = max_queued_per_user
        self.max_queued_total = max_queued_total
        self.lease_owner = uuid.uuid4().hex
        self.storage_retry_delays = tuple(storage_retry_delays)
        # The render backend: the in-process worker over `engine`, or what `runner` builds (remote workers).
        self._worker: BatchRunner
        if runner is not None:
            self._worker = runner(self._emit, self.lease_owner)
        elif engine is not None:
            self._worker = Worker(
                db, engine, blobs, emit=self._emit, lease_owner=self.lease_owner, lease_seconds=lease_seconds,
                storage_retry_delays=self.storage_retry_delays,
            )
        else:
            raise ValueError("a scheduler needs an engine or a runner")
        self._fair = FairQueue()
        self._jobs: dict[int, _Job] = {}
        # Every job of every batch in flight, and the batches themselves.
        self._running: list[int] = []
        self._flights: list[_Flight] = []
        self._cancel_running: set[int] = set()
        self._subscribers: dict[int | None, set[EventStream]] = {}
        self._paused = False
        self._paused_guilds: set[int] = set()
        self._stopping = False
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._seconds_per_image: dict[str, float] = {}
        self._order: list[Ticket] | None = None
        # (position, paused) last announced per queued job: a JobQueued goes out only when it changes.
        self._announced: dict[int, tuple[int, bool]] = {}

    # -- lifecycle ------------------------------------------------------------------------------

    async def start(self) -> None:
        """Rebuild the queue from the jobs table and start the worker loop.

        Jobs left running by a dead process count as a failed attempt: they are queued again, or
        failed with their reason after MAX_ATTEMPTS."""
        if self._task is not None:
            return
        self._stopping = False
        _, failed = await self.db.jobs.recover(lease_owner=self.lease_owner, max_attempts=self.MAX_ATTEMPTS)
        for job_id in failed:
            self._emit(JobFailed(job_id))
        self._fair = FairQueue()
        self._jobs.clear()
        self._paused_guilds = set(await self.db.pauses.paused_guilds())
        for row in await self.db.jobs.list_active():
            if row.status == "queued":
                self._track(
                    row.id,
                    row.request,
                    row.batch_key,
                    row.priority,
                    row.private,
                    JobOwner(row.user_id, row.guild_id, row.channel_id),
                )
        for key, samples in (await self.db.jobs.recent_render_seconds()).items():
            for secs in samples:
                self._learn(key, secs)
        self._task = asyncio.create_task(self._loop(), name="atelier-scheduler")
        for entry in self.snapshot():
            self._emit_queued(entry)

    async def stop(self) -> None:
        """Stop taking jobs. Running renders are interrupted at their next step and their jobs go back
        to the queue (their attempt is refunded); nothing queued is lost: it is all in the table."""
        self._stopping = True
        self._wake.set()
        if self._task is not None:
            try:
                await self._task
            finally:
                self._task = None
        flying = [f.task for f in self._flights if f.task is not None]
        if flying:
            await asyncio.gather(*flying, return_exceptions=True)
        await asyncio.to_thread(self._worker.close)

    @property
    def paused(self) -> bool:
        """The whole queue (every guild) is paused; see paused_in() for one guild."""
        return self._paused

    def paused_in(self, guild_id: int | None) -> bool:
        return self._paused or (guild_id is not None and guild_id in self._paused_guilds)

    async def pause(self, guild_id: int | None = None) -> None:
        """The running batch finishes; nothing new starts until resume().

        With a guild, only that guild's jobs are held (a moderator's pause must not stop other
        servers); that pause is stored (storage's PauseStore), so it survives a restart."""
        if guild_id is None:
            self._paused = True
            return
        if guild_id in self._paused_guilds:
            return
        await self.db.pauses.pause(guild_id)
        self._paused_guilds.add(guild_id)
        for job in self._jobs.values():
            if job.owner.guild_id == guild_id:
                self._fair.remove(job.job_id)
        self._order = None
        self._announce(guild_id)

    async def resume(self, guild_id: int | None = None) -> None:
        if guild_id is None:
            self._paused = False
        elif guild_id in self._paused_guilds:
            await self.db.pauses.resume(guild_id)
            self._paused_guilds.discard(guild_id)
            # FairQueue wants each user's jobs oldest first: put the owners' jobs back in id order.
            held = [j for j in self._jobs.values()
                    if j.owner.guild_id == guild_id and j.job_id not in self._running]
            self._refile({j.owner.user_id for j in held})
            self._announce(guild_id)
        self._wake.set()

    def _refile(self, user_ids: set[int]) -> None:
        """Put these users' tracked, not running, not held jobs (back) in the fair order. FairQueue wants
        each user's jobs oldest first, so all of a user's jobs go back in id order."""
        for user_id in user_ids:
            mine = sorted(j.job_id for j in self._jobs.values()
                          if j.owner.user_id == user_id and j.job_id not in self._running
                          and j.owner.guild_id not in self._paused_guilds)
            for job_id in mine:
                self._fair.remove(job_id)
            for job_id in mine:
                self._fair.add(self._ticket(self._jobs[job_id]))
        self._order = None

    def _announce(self, guild_id: int) -> None:
        """Tell watchers of the guild's queued jobs where they stand now."""
        for entry in self.snapshot():
            if entry.guild_id == guild_id and entry.status == "queued":
                self._emit_queued(entry)

    # -- submitting and cancelling --------------------------------------------------------------

    async def submit(
        self,
        request: RenderRequest,
        owner: JobOwner,
        *,
        parent_job_id: int | None = None,
        parent_index: int | None = None,
        priority: float = 1.0,
        max_queued_per_user: int | None = None,
        private: bool = False,
    ) -> int:
        """Queue a job; raises QueueFull (with a user-facing message) when a cap is reached."""
        per_user = self.max_queued_per_user if max_queued_per_user is None else max_queued_per_user
        payload = request.to_json()
        key = batch_key_text(request)
        try:
            row = await self.db.jobs.create(
                user_id=owner.user_id,
                guild_id=owner.guild_id,
                channel_id=owner.channel_id,
                kind=str(request.kind),
                request=payload,
                batch_key=key,
                parent_job_id=parent_job_id,
                parent_index=parent_index,
                priority=priority,
                private=private,
                max_queued_per_user=per_user,
                max_queued_total=self.max_queued_total,
            )
        except CapExceeded as exc:
            if exc.scope == "user":
                raise QueueFull(
                    f"You already have {exc.limit} jobs waiting. Wait for one to finish "
                    "or cancel one with /queue."
                ) from None
            raise QueueFull(
                f"The queue is full right now ({exc.limit} jobs waiting). Please try again in a few minutes."
            ) from None
        self._track(row.id, payload, key, priority, private, owner)
        self._wake.set()
        entry = self.entry(row.id)
        if entry is not None:
            self._emit_queued(entry)
        return row.id

    async def cancel(self, job_id: int) -> bool:
        """A queued job is cancelled at once; a running one is interrupted at its next step (or,
        when it shares its batch, dropped when the batch ends). False if it already ended."""
        if job_id in self._running:
            if job_id in self._cancel_running:
                return True
            self._cancel_running.add(job_id)
            return True
        # Out of the fair order first, so the worker cannot pick it while the DB write is in flight.
        self._fair.remove(job_id)
        self._jobs.pop(job_id, None)
        self._order = None
        if await self.db.jobs.cancel(job_id):
            self._emit(JobCancelled(job_id))
            return True
        return False

    async def cancel_all(self, *, user_id: int | None = None, guild_id: int | None = None) -> int:
        """Cancel every queued and running job of a user and/or guild (moderators' purge)."""
        targets = [
            e.job_id
            for e in self.snapshot()
            if (user_id is None or e.user_id == user_id) and (guild_id is None or e.guild_id == guild_id)
        ]
        return sum([await self.cancel(job_id) for job_id in targets])

    async def readmit(self, job_ids: Sequence[int]) -> None:
        """Jobs requeued in the table behind the scheduler's back (remote mode: a job a worker was
        rendering when the bot restarted, then lost) join the fair order again."""
        rows = [row for job_id in job_ids if (row := await self.db.jobs.get(job_id)) is not None]
        owners = set()
        for row in rows:
            if row.status == "queued" and row.id not in self._jobs:
                self._track(row.id, row.request, row.batch_key, row.priority, row.private,
                            JobOwner(row.user_id, row.guild_id, row.channel_id))
                owners.add(row.user_id)
        self._refile(owners)  # a user's jobs must be in id order
        for entry in self.snapshot():
            if entry.job_id in job_ids:
                self._emit_queued(entry)
        self._wake.set()

    # -- watching -------------------------------------------------------------------------------

    def subscribe(self, job_id: int | None = None) -> EventStream:
        """Events of one job (the stream ends after its final event) or of all jobs (None)."""
        stream = EventStream(job_id, self._unsubscribe)
        self._subscribers.setdefault(job_id, set()).add(stream)
        return stream

    def _unsubscribe(self, stream: EventStream) -> None:
        streams = self._subscribers.get(stream.job_id)
        if streams is not None:
            streams.discard(stream)
            if not streams:
                del self._subscribers[stream.job_id]

    def _emit(self, event: JobEvent) -> None:
        for key in (event.job_id, None):
            for stream in list(self._subscribers.get(key, ())):
                stream.push(event)
        if isinstance(event, JobStarted | JobDone | JobFailed | JobCancelled):
            # A job left the queue: the jobs behind it moved up.
            self._announce_moves()

    def _emit_queued(self, entry: QueueEntry) -> None:
        self._announced[entry.job_id] = (entry.position, entry.paused)
        self._emit(JobQueued(entry.job_id, entry.position, entry.eta_s, paused=entry.paused))

    def _announce_moves(self) -> None:
        """The one source of position updates: a JobQueued for each announced queued job whose position
        (or held state) changed since it was last announced."""
        queued = [e for e in self.snapshot() if e.status == "queued"]
        self._announced = {e.job_id: shown for e in queued if (shown := self._announced.get(e.job_id))}
        for entry in queued:
            if self._announced.get(entry.job_id) not in (None, (entry.position, entry.paused)):
                self._emit_queued(entry)

    def position(self, job_id: int) -> tuple[int, float] | None:
        """(1-based position, seconds until it should be done); (0, eta) while it renders;
        None once it is no longer queued or running."""
        entry = self.entry(job_id)
        return None if entry is None else (entry.position, entry.eta_s)

    def entry(self, job_id: int) -> QueueEntry | None:
        """The job as /queue shows it, or None once it is no longer queued or running."""
        for entry in self.snapshot():
            if entry.job_id == job_id:
                return entry
        return None

    def snapshot(self) -> list[QueueEntry]:
        """Running jobs (position 0), then queued ones in the order they will start."""
        out = [self._entry(self._jobs[i], "running", 0, flight.remaining())
               for flight in self._flights for i in flight.ids if i in self._jobs]
        if self._order is None:
            self._order = self._fair.order()
        # The queue moves when the first batch in flight ends.
        eta = min((flight.remaining() for flight in self._flights), default=0.0)
        for position, ticket in enumerate(self._order, start=1):
            job = self._jobs[ticket.job_id]
            eta += self._estimate(job.batch_key, job.images)
            out.append(self._entry(job, "queued", position, eta))
        # Held jobs of paused guilds come last: they start only after a resume.
        held = sorted((j for j in self._jobs.values()
                       if j.job_id not in self._fair and j.job_id not in self._running),
                      key=lambda j: j.job_id)
        for position, job in enumerate(held, start=len(out) - len(self._running) + 1):
            eta += self._estimate(job.batch_key, job.images)
            out.append(self._entry(job, "queued", position, eta, paused=True))
        return out

    @property
    def queued_count(self) -> int:
        return len(self._fair)

    # -- internals ------------------------------------------------------------------------------

    def _entry(
        self, job: _Job, status: Literal["queued", "running"], position: int, eta: float, *,
        paused: bool = False,
    ) -> QueueEntry:
        return QueueEntry(
            job_id=job.job_id,
            user_id=job.owner.user_id,
            guild_id=job.owner.guild_id,
            channel_id=job.owner.channel_id,
            status=status,
            position=position,
            eta_s=round(eta, 1),
            request=job.request,
            priority=job.priority,
            private=job.private,
            paused=paused,
        )

    def _track(
        self, job_id: int, request: dict[str, Any], key: str, priority: float, private: bool, owner: JobOwner
    ) -> None:
        images = max(1, len(request.get("seeds", ())))
        job = self._jobs[job_id] = _Job(job_id, owner, request, key, images, priority, private)
        if owner.guild_id not in self._paused_guilds:
            self._fair.add(self._ticket(job))
        self._order = None

    @staticmethod
    def _ticket(job: _Job) -> Ticket:
        return Ticket(job.job_id, job.owner.user_id, job.batch_key, job.images, job.priority)

    def _estimate(self, key: str, images: int) -> float:
        per_image = self._seconds_per_image.get(key)
        if per_image is None:
            known = list(self._seconds_per_image.values())
            per_image = sum(known) / len(known) if known else self.DEFAULT_SECONDS_PER_IMAGE
        return per_image * images

    def _learn(self, key: str, seconds_per_image: float) -> None:
        old = self._seconds_per_image.get(key)
        self._seconds_per_image[key] = (
            seconds_per_image if old is None else old + self.EMA_ALPHA * (seconds_per_image - old)
        )

    def _stop_check(self, flight: _Flight) -> Callable[[], bool]:
        def should_stop() -> bool:
            # Read from the render thread: plain attribute reads, safe under the GIL.
            return self._stopping or all(i in self._cancel_running for i in flight.ids)

        return should_stop

    def _can_start(self, ticket: Ticket) -> bool:
        return self._worker.can_start(self._model_of(ticket.job_id), [f.model for f in self._flights])

    def _model_of(self, job_id: int) -> str:
        return str(self._jobs[job_id].request.get("model") or "")

    async def _loop(self) -> None:
        while not self._stopping:
            idle = self._paused or not len(self._fair)
            tickets = [] if idle else self._fair.take(self.max_batch, runnable=self._can_start)
            if not tickets:
                # Woken by a submit, a resume or a batch ending; capacity that appears elsewhere (a remote
                # worker starting) is seen on the next look.
                self._wake.clear()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._wake.wait(), None if idle else CAPACITY_POLL_S)
                continue
            self._order = None
            jobs = [self._jobs[t.job_id] for t in tickets]
            flight = _Flight([j.job_id for j in jobs], self._model_of(jobs[0].job_id), time.monotonic(),
                             self._estimate(jobs[0].batch_key, sum(j.images for j in jobs)))
            self._flights.append(flight)
            self._running.extend(flight.ids)
            flight.task = asyncio.create_task(self._fly(flight, jobs), name=f"atelier-batch-{flight.ids[0]}")

    def take_over(self, rows: Sequence[JobRow], model: str, collect: Collect) -> None:
        """A batch already on a renderer becomes one of this scheduler's flights (remote mode: jobs a
        worker took before this start, adopted by the watchdog): /queue shows it running, its members can
        cancel it, and it holds its slot until `collect` (which records its events) ends. Call after
        start()."""
        jobs = []
        for row in rows:
            if row.id in self._jobs:
                continue
            jobs.append(job := _Job(row.id, JobOwner(row.user_id, row.guild_id, row.channel_id), row.request,
                                    row.batch_key, max(1, len(row.request.get("seeds", ()))), row.priority,
                                    row.private))
            self._jobs[row.id] = job
        if not jobs:
            return
        flight = _Flight([j.job_id for j in jobs], model, time.monotonic(),
                         self._estimate(jobs[0].batch_key, sum(j.images for j in jobs)))
        self._flights.append(flight)
        self._running.extend(flight.ids)
        self._order = None
        flight.task = asyncio.create_task(self._fly(flight, jobs, collect),
                                          name=f"atelier-adopted-{flight.ids[0]}")

    async def _fly(self, flight: _Flight, jobs: list[_Job], collect: Collect | None = None) -> None:
        """Run one batch to its end, then let the loop start what its slot can take next."""
        kept: set[int] = set()
        try:
            if collect is not None:
                outcome = await collect(self._stop_check(flight), self._cancel_running.__contains__)
            else:
                outcome = await self._worker.run(
                    [BatchJob(j.job_id, j.request) for j in jobs],
                    should_stop=self._stop_check(flight),
                    is_cancelled=self._cancel_running.__contains__,
                )
            if outcome is not None and outcome.images:
                self._learn(jobs[0].batch_key, outcome.render_seconds / outcome.images)
        except JobsLost as exc:
            log.warning("%s: back to the queue", exc)
            kept = await self._keep_unfinished(jobs)
        except Exception:
            # Only storage trouble gets here (render errors fail their jobs inside run()), after the
            # worker's own retries: a database locked for long, a disk full.
            log.exception("worker failed on jobs %s", flight.ids)
            kept = await self._keep_unfinished(jobs)
            await asyncio.sleep(1.0)
        finally:
            for job_id in flight.ids:
                if job_id not in kept:
                    self._jobs.pop(job_id, None)
                self._cancel_running.discard(job_id)
                self._running.remove(job_id)
            self._flights.remove(flight)
            self._order = None
            self._wake.set()
        if kept:
            self._refile({self._jobs[i].owner.user_id for i in kept})
            for entry in self.snapshot():  # their messages said "rendering": back to "queued"
                if entry.job_id in kept:
                    self._emit_queued(entry)

    async def _keep_unfinished(self, jobs: list[_Job]) -> set[int]:
        """After a storage failure mid-batch: jobs the table still holds as queued (the claim failed) or
        running (the result could not be recorded) stay in the queue and run again, instead of being
        stranded until a restart while still counting against their member's cap."""
        kept: set[int] = set()
        try:
            for job in jobs:
                if job.job_id in self._cancel_running:  # its member cancelled it meanwhile
                    if await retry_async(partial(self.db.jobs.finish_cancelled, job.job_id),
                                         f"cancel job {job.job_id}", self.storage_retry_delays):
                        self._emit(JobCancelled(job.job_id))
                    continue
                row = await self.db.jobs.get(job.job_id)  # reads work while another connection writes
                if row is None or row.finished:
                    continue
                if row.status == "running":
                    # Not the job's fault: the attempt is refunded.
                    await retry_async(partial(self.db.jobs.requeue, [job.job_id], refund_attempt=True),
                                      f"requeue job {job.job_id}", self.storage_retry_delays)
                kept.add(job.job_id)
        except Exception:
            log.exception("jobs %s could not be put back in the queue now; the next start recovers them",
                          [j.job_id for j in jobs if j.job_id not in kept])
        return kept
