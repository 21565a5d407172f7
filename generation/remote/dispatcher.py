"""The bot's side of remote rendering (ATELIER_BROKER_URL): the scheduler still picks every batch in its
fair order, and starts one only when a live worker serving its model has a free slot (can_start: the
workers' announced slots against the batches this bot has in flight); this runner claims it in SQLite,
publishes it on `jobs.<model>`, and records what the workers report (SQLite first, then the event's ack).
The bot loads no model and imports no torch: the model catalog comes from the workers' announcements.

Discord-free, like the in-process worker it stands in for (generation.worker.Worker).
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import io
import json
import logging
import os
import time
import uuid
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

from nats.aio.client import Client as NATS
from nats.aio.msg import Msg
from nats.aio.subscription import Subscription
from nats.js import JetStreamContext
from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy
from nats.js.errors import NotFoundError
from nats.js.kv import KeyValue
from PIL import Image

from generation.engine import StepGate
from generation.errors import InvalidRequest
from generation.events import JobDone, JobEvent, JobProgress, JobRendered, JobStarted
from generation.images import encode_fast_grid, encode_grid, make_grid
from generation.loras import LoraLibrary
from generation.models import ModelSpec
from generation.remote.broker import cancels_bucket, connect, ensure_streams, get_blob, put_blob, where
from generation.remote.wire import (
    HEARTBEAT_S,
    MAX_DELIVERIES,
    MSG_ID_HEADER,
    Dispatch,
    DispatchJob,
    Event,
    ImageRef,
    Subjects,
    WireError,
    WorkerInfo,
    decode_dispatch,
    decode_event,
    decode_progress,
    decode_worker,
    encode,
)
from generation.request import Kind, RenderRequest
from generation.worker import (
    BAD_REQUEST,
    STORE_HOLD_FILE_ENV,
    BatchJob,
    BatchOutcome,
    JobsLost,
    JobTransitions,
)
from storage.blobs import BlobStore
from storage.db import Database
from storage.images import NewImage
from storage.retry import DEFAULT_DELAYS

log = logging.getLogger(__name__)

NO_WORKERS = "No render worker is online yet; please try again in a minute."
DAMAGED = (f"The rendered image of this job arrived damaged {MAX_DELIVERIES} times; please try again, "
           "or tell the server's admins.")
# How often the bot reads the worker registry (entries expire on their own after WORKER_TTL_S).
REGISTRY_POLL_S = 1.0
# A worker silent for two heartbeats (and a registry read) is shown offline; forgotten after an hour.
OFFLINE_AFTER_S = 2 * HEARTBEAT_S + REGISTRY_POLL_S
FORGET_AFTER_S = 3600.0
# How often a batch waiting for its events looks at the scheduler's stop (a shutdown) and its members'
# cancels, which it passes on to the workers: a cancel reaches a rendering worker within about this.
STOP_POLL_S = 0.05


class RemoteModels:
    """The model catalog in remote mode (a generation.models.ModelCatalog): names, families and defaults
    as the live workers announce them. A model stays known after its last worker leaves, so its queued
    jobs wait for a worker instead of being refused."""

    def __init__(self, lora_dir: Path | None = None, remembered: Path | None = None) -> None:
        self._specs: dict[str, ModelSpec] = {}
        # LoRA names are checked against the bot's own library; the workers must hold the same files
        # (distributing them to workers is not designed yet).
        self.loras = LoraLibrary(lora_dir if lora_dir is not None else Path("loras"))
        # The catalog as last announced, kept on disk: a bot restarted while the broker is down still
        # knows its models, so members' jobs queue instead of being refused.
        self._remembered = remembered
        if remembered is not None:
            self._recall(remembered)

    def _recall(self, path: Path) -> None:
        try:
            items = json.loads(path.read_text())
            for item in items:
                spec = ModelSpec(name=str(item["name"]), source="remote", family=str(item["family"]),
                                 default_steps=int(item["steps"]), default_guidance=float(item["guidance"]),
                                 default_sampler=str(item["sampler"]),
                                 size=int(item["size"]) if item.get("size") else None)
                self._specs.setdefault(spec.name, spec)
        except FileNotFoundError:
            return
        except (OSError, ValueError, TypeError, KeyError) as exc:  # a damaged file: the workers re-announce
            log.warning("the remembered model catalog %s is ignored: %s", path, exc)

    def _remember(self) -> None:
        if self._remembered is None:
            return
        items = [{"name": s.name, "family": s.family, "steps": s.default_steps,
                  "guidance": s.default_guidance, "sampler": s.default_sampler, "size": s.size}
                 for s in self._specs.values()]
        try:
            temp = self._remembered.with_suffix(".tmp")
            temp.write_text(json.dumps(items))
            temp.replace(self._remembered)
        except OSError as exc:  # a read-only data dir costs only the memory across restarts
            log.warning("the model catalog could not be remembered: %s", exc)

    def update(self, workers: Sequence[WorkerInfo]) -> None:
        added = False
        for info in sorted(workers, key=lambda w: w.name):
            for model in info.models:
                if model.name not in self._specs:
                    self._specs[model.name] = ModelSpec(
                        name=model.name, source="remote", family=model.family, default_steps=model.steps,
                        default_guidance=model.guidance, default_sampler=model.sampler, size=model.size)
                    added = True
        if added:
            self._remember()

    def names(self) -> list[str]:
        return list(self._specs)

    def spec(self, name: str | None) -> ModelSpec:
        if not self._specs:
            raise InvalidRequest(NO_WORKERS)
        if name is None or name == "":
            return next(iter(self._specs.values()))
        spec = self._specs.get(name)
        if spec is None:
            raise InvalidRequest(f"Unknown model `{name}`. Available: {', '.join(self._specs)}.")
        return spec

    def resident_pipeline(self, name: str) -> Any | None:
        return None  # no tokenizer here: notes about unreadable words are the workers' to make


@dataclass(frozen=True)
class WorkerStatus:
    """One worker as /admin workers shows it: its last announcement, seconds since it was last heard."""

    info: WorkerInfo
    heard_s: float
    online: bool


@dataclass
class _Pending:
    """One dispatched batch: its jobs by id and the events that reach them."""

    requests: dict[int, RenderRequest]
    events: asyncio.Queue[tuple[Event, Msg]] = field(default_factory=asyncio.Queue)
    # Each job's current dispatch (a damaged result's retry is a new one); None when unknown (a batch
    # adopted from an earlier run of the bot). An event of another dispatch is stale: a worker the bot
    # gave up on (the watchdog requeued its job) must not fail or finish the job's current render.
    dispatch_of: dict[int, str | None] = field(default_factory=dict)
    # Set by the watchdog (generation.remote.watchdog): no worker has this batch and the broker lost it.
    lost: bool = False


async def _next_event(pending: _Pending, should_stop: Callable[[], bool],
                      tick: Callable[[], Awaitable[None]]) -> tuple[Event, Msg] | None:
    """The batch's next event, or None once the scheduler says stop; `tick` runs between looks."""
    while True:
        await tick()
        if should_stop():
            return None
        with contextlib.suppress(TimeoutError):
            return await asyncio.wait_for(pending.events.get(), STOP_POLL_S)


def _report_late_refusal(task: asyncio.Task[None]) -> None:
    """A broker that came up refusing us (after the bot started): one line for the operator."""
    if not task.cancelled() and task.exception() is not None:
        log.error("the broker cannot be used: %s", task.exception())


class RemoteBackend:
    """The connection to the broker, shared by the scheduler's runner and the bot's views of workers."""

    def __init__(self, url: str, subjects: Subjects, lora_dir: Path | None = None,
                 remembered: Path | None = None) -> None:
        self._url = url
        self.subjects = subjects
        self.models = RemoteModels(lora_dir, remembered)
        self.workers: dict[str, WorkerInfo] = {}
        self._nc: NATS | None = None
        self._js: JetStreamContext | None = None
        self._kv: KeyValue | None = None
        self._cancels: KeyValue | None = None
        self._tasks: list[asyncio.Task[None]] = []
        self._changed = asyncio.Event()
        self._pending: dict[int, _Pending] = {}
        # Which worker took each dispatched job still open (its latest "started"), for /queue and
        # /admin workers; the registry's `busy` says which of them renders now and at which step.
        self.taken_by: dict[int, str] = {}
        self._connecting: asyncio.Task[None] | None = None
        # Every worker seen, and when its entry last changed (a heartbeat), for /admin workers.
        self._seen: dict[str, WorkerInfo] = {}
        self._heard: dict[str, float] = {}
        self._revisions: dict[str, int] = {}
        self._events_sub: Subscription | None = None
        self._progress_sub: Subscription | None = None

    @property
    def js(self) -> JetStreamContext:
        if self._js is None:
            raise RuntimeError("the remote backend is not started")
        return self._js

    async def start(self) -> None:
        """Connect and set up. A broker that is down does not hold the bot: this returns at its first
        failed attempt and keeps connecting in the background (jobs queue meanwhile and are dispatched
        once it is up). Wrong credentials or no JetStream raise BrokerRefused here."""
        unreachable = asyncio.Event()
        self._connecting = asyncio.create_task(self._connect(unreachable), name="atelier-broker-connect")
        down = asyncio.create_task(unreachable.wait())
        await asyncio.wait({self._connecting, down}, return_when=asyncio.FIRST_COMPLETED)
        down.cancel()
        if self._connecting.done():
            self._connecting.result()  # raises BrokerRefused
            return
        log.warning("the broker at %s is unreachable; jobs wait in the queue until it is up",
                    where(self._url))
        self._connecting.add_done_callback(_report_late_refusal)

    @property
    def connected(self) -> bool:
        return self._nc is not None and self._nc.is_connected and self._kv is not None

    async def _connect(self, unreachable: asyncio.Event) -> None:
        self._nc, self._js = await connect(self._url, "atelier-bot", unreachable)
        await self.repair(force=True)
        log.info("connected to the broker at %s", where(self._url))
        self._tasks.append(asyncio.create_task(self._watch_registry(), name="atelier-worker-registry"))

    async def repair(self, *, force: bool = False) -> None:
        """(Re)create the streams, the registry bucket and the bot's durable events consumer when they
        are missing: at the first connection, and after the broker lost its store (wiped, or a new
        server). Harmless to repeat."""
        js = self.js
        if not force:
            try:
                await js.consumer_info(self.subjects.events_stream, "bot")
                return
            except NotFoundError:
                log.warning("the broker lost its streams; creating them again")
        self._kv = await ensure_streams(js, self.subjects)
        self._cancels = await cancels_bucket(js, self.subjects)
        if self._events_sub is not None:
            with contextlib.suppress(Exception):
                await self._events_sub.unsubscribe()
        # Events: one durable consumer for the bot, acked after the SQLite write (a restart resumes).
        self._events_sub = await js.subscribe(
            self.subjects.events(">"), durable="bot", cb=self._on_event, manual_ack=True,
            config=ConsumerConfig(ack_policy=AckPolicy.EXPLICIT, deliver_policy=DeliverPolicy.ALL),
        )
        if self._progress_sub is None:
            assert self._nc is not None
            self._progress_sub = await self._nc.subscribe(self.subjects.progress("*"), cb=self._on_progress)
        await self._read_registry()

    async def close(self) -> None:
        if self._connecting is not None:
            self._connecting.cancel()
            with contextlib.suppress(BaseException):
                await self._connecting
        for task in self._tasks:
            task.cancel()
            with contextlib.suppress(BaseException):
                await task
        self._tasks.clear()
        if self._nc is not None:
            with contextlib.suppress(Exception):
                await self._nc.close()
            self._nc = None

    # -- the worker registry ----------------------------------------------------------------------

    async def _read_registry(self) -> None:
        if self._kv is None:
            return
        try:
            keys = await self._kv.keys()
        except Exception:  # nats raises NoKeysError for an empty bucket
            keys = []
        workers: dict[str, WorkerInfo] = {}
        for key in keys:
            try:
                entry = await self._kv.get(key)
                workers[key] = decode_worker(entry.value or b"")
                if self._revisions.get(key) != entry.revision:  # a new heartbeat
                    self._revisions[key] = entry.revision or 0
                    self._heard[key] = time.monotonic()
            except WireError as exc:
                log.warning("worker entry %r ignored: %s", key, exc)
            except Exception:  # expired between keys() and get()
                continue
        self.workers = workers
        self._seen.update(workers)
        self.models.update(list(workers.values()))
        self._changed.set()

    def roster(self) -> list[WorkerStatus]:
        """Every worker this bot heard from in the last FORGET_AFTER_S, online ones first, by name."""
        now = time.monotonic()
        out = []
        for name, info in list(self._seen.items()):
            age = now - self._heard.get(name, now)
            if name not in self.workers and age > FORGET_AFTER_S:
                del self._seen[name]
                continue
            out.append(WorkerStatus(info, age, name in self.workers and age <= OFFLINE_AFTER_S))
        return sorted(out, key=lambda w: (not w.online, w.info.name))

    def worker_states(self) -> dict[str, int]:
        """How many workers are in each state ("offline" for those not heard from lately)."""
        states: dict[str, int] = {}
        for status in self.roster():
            state = status.info.state if status.online else "offline"
            states[state] = states.get(state, 0) + 1
        return states

    def worker_of(self, job_id: int) -> str | None:
        """The live worker that lists `job_id` as busy."""
        return next((w.name for w in self.workers.values() if job_id in w.busy), None)

    def serves(self, model: str) -> bool:
        """A live worker serves `model` (busy or not)."""
        return any(model in {m.name for m in w.models} for w in self.workers.values())

    async def _watch_registry(self) -> None:
        while True:
            await asyncio.sleep(REGISTRY_POLL_S)
            try:
                await self._read_registry()
            except Exception as exc:  # broker away: the last view stands until it is back
                log.warning("reading the worker registry failed: %s", type(exc).__name__)

    def has_capacity(self, model: str) -> bool:
        """A live worker serving `model` lists fewer busy jobs than its slots (as its last heartbeat said;
        the scheduler's own count is can_start)."""
        return any(len(w.busy) < w.slots for w in self.workers.values()
                   if model in {m.name for m in w.models})

    def can_start(self, model: str, in_flight: Sequence[str]) -> bool:
        """Would a batch of `model` find a free slot on a live worker serving it, beside the batches this
        bot has in flight (their models)? Counted by the bot, not from the workers' `busy` (a heartbeat
        old): each batch in flight is placed on a worker that can take it, the batches with the fewest
        choices first and preferably where `model` is not served, so a shared worker is counted busy
        only when it must be. A batch whose workers are all gone waits in the broker and holds no slot."""
        slots = {name: w.slots for name, w in self.workers.items()}
        served = {name: {m.name for m in w.models} for name, w in self.workers.items()}
        if not any(model in names for names in served.values()):
            return False
        for other in sorted(in_flight, key=lambda m: sum(m in names for names in served.values())):
            choices = [name for name in slots if slots[name] > 0 and other in served[name]]
            if choices:
                slots[min(choices, key=lambda name: (model in served[name], -slots[name], name))] -= 1
        return any(free > 0 for name, free in slots.items() if model in served[name])

    # -- events and progress ------------------------------------------------------------------------

    async def _on_event(self, msg: Msg) -> None:
        try:
            event = decode_event(msg.data)
            if msg.subject != self.subjects.events(event.job_id):
                raise WireError(f"an event of job {event.job_id} from worker {event.worker} on another job's "
                                "subject")
        except WireError as exc:
            log.error("event on %s (stream seq %s) terminated: %s", msg.subject, msg.metadata.sequence.stream,
                      exc)
            await msg.term()
            return
        pending = self._pending.get(event.job_id)
        if pending is None:
            # A finished job's late or repeated event (completion is first-wins), or a job this bot is not
            # waiting for (a stray or forged message): nothing to record.
            log.warning("%s event of job %s from worker %s (dispatch %s) terminated: no batch in flight has "
                        "this job", event.kind, event.job_id, event.worker, event.dispatch_id)
            await msg.term()
            return
        current = pending.dispatch_of.get(event.job_id)
        if current is not None and event.dispatch_id != current:
            log.warning("%s event of job %s from worker %s terminated: stale dispatch %s (current %s)",
                        event.kind, event.job_id, event.worker, event.dispatch_id, current)
            await msg.term()
            return
        await pending.events.put((event, msg))

    async def _on_progress(self, msg: Msg) -> None:
        try:
            progress = decode_progress(msg.data)
        except WireError as exc:
            log.warning("progress on %s ignored: %s", msg.subject, exc)
            return
        if progress.job_id in self._pending and self._emit is not None:
            preview = None
            if progress.preview:
                with contextlib.suppress(ValueError, OSError):
                    preview = Image.open(io.BytesIO(base64.b64decode(progress.preview))).convert("RGB")
            self._emit(JobProgress(progress.job_id, progress.step, progress.total, preview))

    _emit: Callable[[JobEvent], None] | None = None
    # The runner the scheduler built (the watchdog records adopted jobs' events through it too).
    active_runner: RemoteRunner | None = None

    async def dispatch(self, model: str, jobs: Sequence[tuple[int, RenderRequest]]) -> _Pending:
        pending = _Pending({job_id: request for job_id, request in jobs})
        for job_id in pending.requests:
            self._pending[job_id] = pending
        await self.publish(model, jobs)
        return pending

    async def publish(self, model: str, jobs: Sequence[tuple[int, RenderRequest]]) -> None:
        """One batch on `jobs.<model>` under a new dispatch id (a retry of a job is a new batch: its events
        reach whoever waits for the job already, and the previous dispatch's become stale)."""
        dispatch_id = uuid.uuid4().hex
        for job_id, _ in jobs:
            pending = self._pending.get(job_id)
            if pending is not None:
                pending.dispatch_of[job_id] = dispatch_id
        body = encode(Dispatch(dispatch_id=dispatch_id, jobs=tuple(
            DispatchJob(job_id=job_id, request=request.to_json()) for job_id, request in jobs)))
        await self.js.publish(self.subjects.jobs(model), body, headers={MSG_ID_HEADER: dispatch_id})

    async def cancel(self, job_id: int) -> None:
        """Tell the workers a dispatched job was cancelled: one holding it drops it before rendering, one
        rendering it stops at the next step, and a later redelivery drops it too."""
        if self._cancels is None:
            return
        try:
            await self._cancels.put(str(job_id), b"")
        except Exception as exc:  # broker away: the job is cancelled here anyway; its result is ignored
            log.warning("telling the workers job %s was cancelled failed: %s", job_id, type(exc).__name__)

    def forget(self, job_ids: Sequence[int]) -> None:
        for job_id in job_ids:
            self._pending.pop(job_id, None)
            self.taken_by.pop(job_id, None)

    # -- what the watchdog (generation.remote.watchdog) asks ------------------------------------

    def adopt(self, jobs: Sequence[tuple[int, RenderRequest]]) -> _Pending:
        """Wait for the events of jobs dispatched by an earlier run of the bot (nothing is published)."""
        pending = _Pending({job_id: request for job_id, request in jobs})
        for job_id in pending.requests:
            self._pending[job_id] = pending
        return pending

    def waiting_for(self, job_ids: Sequence[int]) -> set[int]:
        """Those of `job_ids` whose events this bot waits for."""
        return {job_id for job_id in job_ids if job_id in self._pending}

    def lose(self, job_ids: Sequence[int]) -> None:
        """The watchdog's verdict: these jobs are nowhere; whoever waits for their batch stops waiting."""
        for job_id in job_ids:
            pending = self._pending.get(job_id)
            if pending is not None:
                pending.lost = True

    def busy_job_ids(self) -> set[int]:
        """Jobs a live worker lists as its own (rendering or prefetched)."""
        return {job_id for info in self.workers.values() for job_id in info.busy}

    async def held_job_ids(self) -> set[int]:
        """Jobs in a batch the broker still holds (not yet acked by a worker). The jobs stream only holds
        batches that had a free slot, so reading it whole stays small."""
        js = self.js
        state = (await js.stream_info(self.subjects.jobs_stream)).state
        held: set[int] = set()
        if not state.messages:
            return held
        for seq in range(state.first_seq, state.last_seq + 1):
            try:
                msg = await js.get_msg(self.subjects.jobs_stream, seq)
                held.update(job.job_id for job in decode_dispatch(msg.data or b"").jobs)
            except NotFoundError:  # acked meanwhile, or a gap
                continue
            except WireError:  # a malformed batch holds no job of ours; its worker terminates it
                continue
        return held

    async def ended_job_ids(self, job_ids: Sequence[int]) -> set[int]:
        """Jobs whose last event in the broker ends them (done, failed, cancelled): the bot has yet to
        record it, so they are not lost."""
        ended: set[int] = set()
        for job_id in job_ids:
            try:
                msg = await self.js.get_last_msg(self.subjects.events_stream, self.subjects.events(job_id))
                if decode_event(msg.data or b"").kind != "started":
                    ended.add(job_id)
            except (NotFoundError, WireError):
                continue
        return ended

    def runner(self, db: Database, blobs: BlobStore, *,
               storage_retry_delays: Sequence[float] = DEFAULT_DELAYS,
               lease_seconds: float = 3600.0) -> Callable[[Callable[[JobEvent], None], str], RemoteRunner]:
        """The scheduler's runner factory (generation.worker.RunnerFactory)."""

        def build(emit: Callable[[JobEvent], None], lease_owner: str) -> RemoteRunner:
            self._emit = emit
            self.active_runner = RemoteRunner(self, db, blobs, emit=emit, lease_owner=lease_owner,
                                              lease_seconds=lease_seconds,
                                              storage_retry_delays=storage_retry_delays)
            return self.active_runner

        return build


class RemoteRunner(JobTransitions):
    """A generation.worker.BatchRunner whose renders happen on remote workers."""

    def __init__(self, backend: RemoteBackend, db: Database, blobs: BlobStore, *,
                 emit: Callable[[JobEvent], None], lease_owner: str, lease_seconds: float,
                 storage_retry_delays: Sequence[float]) -> None:
        self._backend = backend
        self._db = db
        self._blobs = blobs
        self._emit = emit
        self._lease_owner = lease_owner
        self._lease_seconds = lease_seconds
        self._delays = tuple(storage_retry_delays)
        # Test-only, like the in-process worker's: holds a result between its fast grid and its storing.
        self.store_gate = StepGate(os.environ.get(STORE_HOLD_FILE_ENV) or None)

    def close(self) -> None:
        pass

    def can_start(self, model: str, in_flight: Sequence[str]) -> bool:
        return self._backend.can_start(model, in_flight)

    async def run(
        self,
        jobs: Sequence[BatchJob],
        *,
        should_stop: Callable[[], bool],
        is_cancelled: Callable[[int], bool],
    ) -> BatchOutcome | None:
        # 1. Read the requests; an unreadable one fails alone.
        readable: list[tuple[int, RenderRequest]] = []
        for job in jobs:
            try:
                readable.append((job.job_id, RenderRequest.from_json(job.request)))
            except (KeyError, TypeError, ValueError):
                log.exception("job %s has an unreadable request", job.job_id)
                await self._fail(job.job_id, BAD_REQUEST)
        if not readable:
            return None
        model = readable[0][1].model

        # 2. Claim (a job cancelled meanwhile is skipped); sources go to the broker beside the batch. The
        # scheduler started this batch only because a live worker serving its model has a free slot, so
        # the broker never holds work out of the fair order.
        claimed = set(await self._stored("claim", lambda: self._db.jobs.claim(
            [job_id for job_id, _ in readable], lease_owner=self._lease_owner,
            lease_seconds=self._lease_seconds)))
        live = [(job_id, request) for job_id, request in readable if job_id in claimed]
        for job_id, _ in live:
            self._emit(JobStarted(job_id))
        if not live:
            return None
        await self._upload_sources([request for _, request in live])
        pending = await self._backend.dispatch(model, live)

        # 3. Record each job's end as its events arrive (SQLite first, then the ack).
        try:
            return await self.collect(pending, should_stop, is_cancelled)
        finally:
            self._backend.forget(list(pending.requests))

    async def collect(self, pending: _Pending, should_stop: Callable[[], bool],
                      is_cancelled: Callable[[int], bool]) -> BatchOutcome | None:
        """Record each job's end as its events arrive (SQLite first, then the ack). Raises JobsLost when
        the watchdog finds the batch lost: the scheduler requeues its unfinished jobs."""
        seconds, images = 0.0, 0
        open_jobs = set(pending.requests)
        told: set[int] = set()

        async def tell_cancels() -> None:
            # A member's cancel reaches the workers at once: the job's result would be ignored anyway, but
            # its render need not hold a worker.
            for job_id in sorted(open_jobs - told):
                if is_cancelled(job_id):
                    told.add(job_id)
                    await self._backend.cancel(job_id)

        while open_jobs:
            got = await _next_event(pending, lambda: should_stop() or pending.lost, tell_cancels)
            if got is None:
                if pending.lost and not should_stop():
                    raise JobsLost(f"jobs {sorted(open_jobs)} are on no worker and no longer in the broker")
                # A shutdown or its owners' cancels: the worker may finish, but its late events are
                # ignored; a stopped job goes back to the queue with its attempt refunded.
                await self._stopped(sorted(open_jobs), is_cancelled)
                break
            event, msg = got
            if event.job_id in open_jobs:
                made = await self._record(event, pending.requests[event.job_id], is_cancelled)
                if made is not None:
                    open_jobs.discard(event.job_id)
                    seconds += event.render_seconds if made else 0.0
                    images += made
            await msg.ack()
        return BatchOutcome(seconds, images) if images else None

    async def _upload_sources(self, requests: list[RenderRequest]) -> None:
        """Variations and upscales start from the bot's stored image: it travels beside the batch."""
        for request in requests:
            if request.kind != Kind.TXT2IMG and request.source is not None:
                data = await asyncio.to_thread(self._blobs.read, request.source)
                await put_blob(self._backend.js, self._backend.subjects, data)
            if request.kind == Kind.CANVAS and request.mask is not None:
                data = await asyncio.to_thread(self._blobs.read, request.mask)
                await put_blob(self._backend.js, self._backend.subjects, data)

    async def _record(self, event: Event, request: RenderRequest,
                      is_cancelled: Callable[[int], bool]) -> int | None:
        """One event of a job written to SQLite: the images it ended with, or None while it goes on."""
        if event.kind == "done":
            return await self._done(event, request, is_cancelled)
        if event.kind == "failed":
            await self._fail(event.job_id, event.reason or BAD_REQUEST)
            return 0
        if event.kind == "cancelled":
            await self._cancelled(event.job_id)
            return 0
        # started: a second start means its last worker died with it.
        self._backend.taken_by[event.job_id] = event.worker
        if event.attempt > 1:
            await self._stored(f"count attempt of job {event.job_id}",
                               partial(self._db.jobs.count_attempt, event.job_id, event.attempt))
        return None

    async def _done(self, event: Event, request: RenderRequest, is_cancelled: Callable[[int], bool]
                    ) -> int | None:
        job_id = event.job_id
        if is_cancelled(job_id):
            await self._cancelled(job_id)
            return 0
        try:
            pictures = [await self._fetch(ref, request) for ref in event.images]
            if len(pictures) != request.count:
                raise WireError(f"{len(pictures)} images for a job of {request.count}")
        except WireError as exc:
            log.error("job %s: the result from worker %s is refused: %s", job_id, event.worker, exc)
            return await self._retry_damaged(job_id, request)
        # Grid first, as in-process: the member sees the fast JPEG now, the stored PNGs follow.
        fast = await asyncio.to_thread(lambda: encode_fast_grid(make_grid([image for _, image in pictures])))
        self._emit(JobRendered(job_id, fast, any(ref.nsfw for ref in event.images)))
        await asyncio.to_thread(self.store_gate.hold, None)
        grid = None
        if len(pictures) > 1:
            grid_png = await asyncio.to_thread(encode_grid, [image for _, image in pictures], request)
            grid = await asyncio.to_thread(self._blobs.put, grid_png)
        rows = [NewImage(ref.index, ref.seed, key, ref.width, ref.height, nsfw=ref.nsfw)
                for (key, _), ref in zip(pictures, event.images, strict=True)]
        first, _ = await self._stored(f"complete job {job_id}", lambda: self._db.jobs.complete(
            job_id, rows, render_seconds=event.render_seconds, grid_blob=grid))
        if first:
            self._emit(JobDone(job_id))
        return len(rows)

    async def _retry_damaged(self, job_id: int, request: RenderRequest) -> int | None:
        """A corrupt, oversized or missing image is a failed attempt of its job, not the job's end: it is
        dispatched again (another delivery, maybe another worker) until its attempts run out. Returns None
        while the job goes on, 0 once it failed."""
        row = await self._stored(f"read job {job_id}", partial(self._db.jobs.get, job_id))
        if row is None or row.status != "running":
            return 0
        if row.attempts >= MAX_DELIVERIES:
            await self._fail(job_id, DAMAGED)
            return 0
        await self._stored(f"count attempt of job {job_id}",
                           partial(self._db.jobs.count_attempt, job_id, row.attempts + 1))
        await self._backend.publish(request.model, [(job_id, request)])
        return None

    async def _fetch(self, ref: ImageRef, request: RenderRequest) -> tuple[str, Image.Image]:
        """One image from the broker, checked (hash, size, decode, dimensions), stored as a blob."""
        data = await get_blob(self._backend.js, self._backend.subjects, ref.sha256)
        if len(data) != ref.size:
            raise WireError(f"image {ref.sha256[:12]} is {len(data)} bytes, announced {ref.size}")

        def decode() -> Image.Image:
            with Image.open(io.BytesIO(data)) as image:
                image.load()
                return image.convert("RGB")

        try:
            image = await asyncio.to_thread(decode)
        except (OSError, ValueError) as exc:
            raise WireError(f"image {ref.sha256[:12]} does not decode: {exc}") from None
        if image.size != (ref.width, ref.height) or image.size != (request.width, request.height):
            raise WireError(f"image {ref.sha256[:12]} is {image.size}, the job asked {request.width}x"
                            f"{request.height}")
        key = await asyncio.to_thread(self._blobs.put, data)
        return key, image
