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
import logging
import uuid
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

from nats.aio.client import Client as NATS
from nats.aio.msg import Msg
from nats.js import JetStreamContext
from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy
from nats.js.kv import KeyValue
from PIL import Image

from generation.errors import InvalidRequest
from generation.events import JobDone, JobEvent, JobProgress, JobStarted
from generation.images import encode_grid
from generation.loras import LoraLibrary
from generation.models import ModelSpec
from generation.remote.broker import cancels_bucket, connect, ensure_streams, get_blob, put_blob
from generation.remote.wire import (
    MSG_ID_HEADER,
    Dispatch,
    DispatchJob,
    Event,
    ImageRef,
    Subjects,
    WireError,
    WorkerInfo,
    decode_event,
    decode_progress,
    decode_worker,
    encode,
)
from generation.request import Kind, RenderRequest
from generation.worker import BAD_REQUEST, BatchJob, BatchOutcome, JobTransitions
from storage.blobs import BlobStore
from storage.db import Database
from storage.images import NewImage
from storage.retry import DEFAULT_DELAYS

log = logging.getLogger(__name__)

NO_WORKERS = "No render worker is online yet; please try again in a minute."
DAMAGED = "The rendered image of this job arrived damaged; please try again."
# How often the bot reads the worker registry (entries expire on their own after WORKER_TTL_S).
REGISTRY_POLL_S = 1.0
# How often a batch waiting for its events looks at the scheduler's stop (a shutdown) and its members'
# cancels, which it passes on to the workers: a cancel reaches a rendering worker within about this.
STOP_POLL_S = 0.05


class RemoteModels:
    """The model catalog in remote mode (a generation.models.ModelCatalog): names, families and defaults
    as the live workers announce them. A model stays known after its last worker leaves, so its queued
    jobs wait for a worker instead of being refused."""

    def __init__(self, lora_dir: Path | None = None) -> None:
        self._specs: dict[str, ModelSpec] = {}
        # LoRA names are checked against the bot's own library; the workers must hold the same files
        # (distributing them to workers is not designed yet).
        self.loras = LoraLibrary(lora_dir if lora_dir is not None else Path("loras"))

    def update(self, workers: Sequence[WorkerInfo]) -> None:
        for info in sorted(workers, key=lambda w: w.name):
            for model in info.models:
                if model.name not in self._specs:
                    self._specs[model.name] = ModelSpec(
                        name=model.name, source="remote", family=model.family, default_steps=model.steps,
                        default_guidance=model.guidance, default_sampler=model.sampler)

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


@dataclass
class _Pending:
    """One dispatched batch: its jobs by id and the events that reach them."""

    requests: dict[int, RenderRequest]
    events: asyncio.Queue[tuple[Event, Msg]] = field(default_factory=asyncio.Queue)


async def _next_event(pending: _Pending, should_stop: Callable[[], bool],
                      tick: Callable[[], Awaitable[None]]) -> tuple[Event, Msg] | None:
    """The batch's next event, or None once the scheduler says stop; `tick` runs between looks."""
    while True:
        await tick()
        if should_stop():
            return None
        with contextlib.suppress(TimeoutError):
            return await asyncio.wait_for(pending.events.get(), STOP_POLL_S)


class RemoteBackend:
    """The connection to the broker, shared by the scheduler's runner and the bot's views of workers."""

    def __init__(self, url: str, subjects: Subjects, lora_dir: Path | None = None) -> None:
        self._url = url
        self.subjects = subjects
        self.models = RemoteModels(lora_dir)
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

    @property
    def js(self) -> JetStreamContext:
        if self._js is None:
            raise RuntimeError("the remote backend is not started")
        return self._js

    async def start(self) -> None:
        self._nc, self._js = await connect(self._url, "atelier-bot")
        self._kv = await ensure_streams(self._js, self.subjects)
        self._cancels = await cancels_bucket(self._js, self.subjects)
        await self._read_registry()
        # Events: one durable consumer for the bot, acked after the SQLite write (a restart resumes).
        await self._js.subscribe(
            self.subjects.events(">"), durable="bot", cb=self._on_event, manual_ack=True,
            config=ConsumerConfig(ack_policy=AckPolicy.EXPLICIT, deliver_policy=DeliverPolicy.ALL),
        )
        await self._nc.subscribe(self.subjects.progress("*"), cb=self._on_progress)
        self._tasks.append(asyncio.create_task(self._watch_registry(), name="atelier-worker-registry"))

    async def close(self) -> None:
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
            except WireError as exc:
                log.warning("worker entry %r ignored: %s", key, exc)
            except Exception:  # expired between keys() and get()
                continue
        self.workers = workers
        self.models.update(list(workers.values()))
        self._changed.set()

    async def _watch_registry(self) -> None:
        while True:
            await asyncio.sleep(REGISTRY_POLL_S)
            try:
                await self._read_registry()
            except Exception as exc:  # broker away: the last view stands until it is back
                log.warning("reading the worker registry failed: %s", type(exc).__name__)

    def serves(self, model: str) -> list[str]:
        """The live workers serving `model`, by name."""
        return sorted(name for name, w in self.workers.items() if model in {m.name for m in w.models})

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
        except WireError as exc:
            log.error("event on %s terminated: %s", msg.subject, exc)
            await msg.term()
            return
        pending = self._pending.get(event.job_id)
        if pending is None:
            # A finished job's late or repeated event (completion is first-wins), or a job this bot is not
            # waiting for: nothing to record.
            await msg.ack()
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

    async def dispatch(self, model: str, jobs: Sequence[tuple[int, RenderRequest]]) -> _Pending:
        dispatch_id = uuid.uuid4().hex
        pending = _Pending({job_id: request for job_id, request in jobs})
        for job_id in pending.requests:
            self._pending[job_id] = pending
        body = encode(Dispatch(dispatch_id=dispatch_id, jobs=tuple(
            DispatchJob(job_id=job_id, request=request.to_json()) for job_id, request in jobs)))
        await self.js.publish(self.subjects.jobs(model), body, headers={MSG_ID_HEADER: dispatch_id})
        return pending

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

    def runner(self, db: Database, blobs: BlobStore, *,
               storage_retry_delays: Sequence[float] = DEFAULT_DELAYS,
               lease_seconds: float = 3600.0) -> Callable[[Callable[[JobEvent], None], str], RemoteRunner]:
        """The scheduler's runner factory (generation.worker.RunnerFactory)."""

        def build(emit: Callable[[JobEvent], None], lease_owner: str) -> RemoteRunner:
            self._emit = emit
            return RemoteRunner(self, db, blobs, emit=emit, lease_owner=lease_owner,
                                lease_seconds=lease_seconds, storage_retry_delays=storage_retry_delays)

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
        return await self._follow(pending, should_stop, is_cancelled)

    async def _follow(self, pending: _Pending, should_stop: Callable[[], bool],
                      is_cancelled: Callable[[int], bool]) -> BatchOutcome | None:
        """3. Record each job's end as its events arrive (SQLite first, then the ack). A member's cancel
        reaches the workers at once: the job's result would be ignored anyway, but its render need not
        hold a worker."""
        seconds, images = 0.0, 0
        open_jobs = set(pending.requests)
        told: set[int] = set()

        async def tell_cancels() -> None:
            for job_id in sorted(open_jobs - told):
                if is_cancelled(job_id):
                    told.add(job_id)
                    await self._backend.cancel(job_id)

        try:
            while open_jobs:
                got = await _next_event(pending, should_stop, tell_cancels)
                if got is None:
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
        finally:
            self._backend.forget(list(pending.requests))
        return BatchOutcome(seconds, images) if images else None

    async def _upload_sources(self, requests: list[RenderRequest]) -> None:
        """Variations and upscales start from the bot's stored image: it travels beside the batch."""
        for request in requests:
            if request.kind != Kind.TXT2IMG and request.source is not None:
                data = await asyncio.to_thread(self._blobs.read, request.source)
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

    async def _done(self, event: Event, request: RenderRequest, is_cancelled: Callable[[int], bool]) -> int:
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
            await self._fail(job_id, DAMAGED)
            return 0
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
