"""`atelier worker`: a remote renderer. It pulls batches the bot dispatched from `jobs.<model>`, renders
them with the same Engine as the in-process worker, uploads the PNGs as checked chunks and reports
started / done / failed as events; the bot keeps the queue, the fair order and SQLite.

Slots: the worker holds up to `slots` batches at once (default 2: one rendering, one prefetched). Renders
take turns on its one render thread; while one renders, the next batch's sources are fetched and the
last one's PNGs encoded and uploaded, so the GPU does not wait for the network.

At-least-once: a batch is acked only after its events are stored by the broker. Until then in-progress
acks keep the lease; a worker that dies stops sending them and JetStream redelivers the batch to another
worker after the ack-wait. Every event carries the job and dispatch ids, so a repeat is harmless.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import io
import logging
import signal
import time
from dataclasses import dataclass, field

import nats.js.errors
from nats.aio.client import Client as NATS
from nats.aio.msg import Msg
from nats.js import JetStreamContext
from nats.js.api import ConsumerConfig
from nats.js.errors import NotFoundError
from nats.js.kv import KeyValue
from PIL import Image

from generation.engine import Engine
from generation.errors import AtelierError, RenderCancelled
from generation.images import encode_png, image_params
from generation.masks import attach_mask
from generation.remote.broker import cancels_bucket, connect, ensure_streams, get_blob, put_blob
from generation.remote.wire import (
    ACK_WAIT_S,
    HEARTBEAT_S,
    MAX_DELIVERIES,
    MSG_ID_HEADER,
    Dispatch,
    DispatchJob,
    Event,
    ImageRef,
    ModelInfo,
    Progress,
    Subjects,
    WireError,
    WorkerInfo,
    decode_dispatch,
    encode,
)
from generation.request import Kind, RenderRequest
from generation.worker import BAD_REQUEST, SOURCE_GONE, UNEXPECTED

log = logging.getLogger(__name__)

# How often a batch waiting for the render thread looks whether its members cancelled it meanwhile.
CANCEL_POLL_S = 0.25
# A batch that reached MAX_DELIVERIES workers and killed each: the in-process recovery's words.
GAVE_UP = f"the renderer stopped during this job {MAX_DELIVERIES} times; giving up"
PROGRESS_EVERY_S = 0.5  # at most 2 progress messages a second per job
PREVIEW_SIDE = 96


@dataclass
class WorkerOptions:
    name: str
    models: list[str]
    slots: int = 2
    max_batch: int = 4
    device: str = "cpu"
    subjects: Subjects = field(default_factory=Subjects)
    # How long the broker waits for a silent worker before handing its batch to another (the consumer's
    # ack-wait; the first worker of a model creates the consumer with it).
    ack_wait: float = ACK_WAIT_S


class RemoteWorker:
    def __init__(self, engine: Engine, options: WorkerOptions) -> None:
        self._engine = engine
        self._options = options
        self._subjects = options.subjects
        self._stopping = asyncio.Event()
        # The jobs on the render thread now (one render at a time: a pipeline is not thread-safe).
        self._busy: list[int] = []
        self._render_turn = asyncio.Lock()
        self._step = (0, 0)
        # Jobs their members cancelled (the cancels bucket, as its updates arrive).
        self._cancelled: set[int] = set()
        self._cancels: KeyValue | None = None
        self._nc: NATS | None = None
        self._sending: set[asyncio.Future[None]] = set()
        self._lost_consumers: set[str] = set()
        # For its registry entry (/admin workers): since when, how many jobs, seconds per image per model.
        self._since = time.monotonic()
        self._state = "loading"
        self._jobs_done = 0
        self._render_time: dict[str, tuple[float, int]] = {}

    def stop(self) -> None:
        self._stopping.set()

    # -- the registry entry ------------------------------------------------------------------------

    def info(self) -> WorkerInfo:
        registry = self._engine.registry
        models = []
        for name in self._options.models:
            spec = registry.spec(name)
            models.append(ModelInfo(name=spec.name, family=spec.family, steps=spec.default_steps,
                                    guidance=spec.default_guidance, sampler=spec.default_sampler,
                                    size=spec.size))
        return WorkerInfo(
            name=self._options.name, device=self._options.device, models=tuple(models),
            loaded=tuple(n for n in self._options.models if registry.is_loaded(n)),
            slots=self._options.slots, max_batch=self._options.max_batch, busy=tuple(self._busy),
            step=self._step[0], total=self._step[1],
            state="stopping" if self._stopping.is_set() else self._state,
            uptime_s=time.monotonic() - self._since, jobs_done=self._jobs_done,
            seconds_per_image={m: secs / n for m, (secs, n) in self._render_time.items() if n},
        )

    async def _heartbeat(self, js: JetStreamContext, kv: KeyValue) -> None:
        while True:
            try:
                await kv.put(self._options.name, encode(self.info()))
            except Exception as exc:  # broker away for a moment: the next beat tries again
                log.warning("heartbeat failed: %s", type(exc).__name__)
                # A broker that lost its store lost the registry bucket too: create it again.
                with contextlib.suppress(Exception):
                    kv = await ensure_streams(js, self._subjects)
            await self._check_consumers(js)
            await asyncio.sleep(HEARTBEAT_S)

    async def _check_consumers(self, js: JetStreamContext) -> None:
        """A broker that lost its store (or a new one) has no consumer of ours: the fetch loop subscribes
        again (a fetch on a vanished consumer may only ever time out)."""
        for model in self._options.models:
            try:
                await js.consumer_info(self._subjects.jobs_stream, self._subjects.consumer(model))
            except NotFoundError:
                self._lost_consumers.add(model)
            except Exception:  # broker away: nothing to learn now
                return

    async def _subscribe(self, js: JetStreamContext, model: str) -> JetStreamContext.PullSubscription:
        return await js.pull_subscribe(
            self._subjects.jobs(model), durable=self._subjects.consumer(model),
            stream=self._subjects.jobs_stream,
            config=ConsumerConfig(ack_wait=self._options.ack_wait, max_deliver=-1),
        )

    # -- the loop ---------------------------------------------------------------------------------

    async def run(self, nc: NATS, js: JetStreamContext) -> None:
        self._nc = nc
        kv = await ensure_streams(js, self._subjects)
        self._cancels = await cancels_bucket(js, self._subjects)
        await nc.subscribe(self._subjects.cancel_updates(), cb=self._on_cancel)
        # Warm-up, renders and safety checks all on the engine's one torch thread (generation/engine.py).
        await self._engine.call(self._engine.warm_up, self._options.models[0])
        subs = {}
        for model in self._options.models:
            subs[model] = await self._subscribe(js, model)
        self._state = "idle"
        beat = asyncio.create_task(self._heartbeat(js, kv))
        log.info("worker %s serving %s", self._options.name, ", ".join(self._options.models))
        # One lane per slot, each fetching and handling one batch at a time.
        lanes = [asyncio.create_task(self._lane(js, subs), name=f"atelier-slot-{i}")
                 for i in range(self._options.slots)]
        try:
            await asyncio.gather(*lanes)
        finally:
            for task in (beat, *lanes):
                task.cancel()
                with contextlib.suppress(BaseException):
                    await task
            with contextlib.suppress(Exception):
                await kv.delete(self._options.name)
            self._engine.thread.shutdown(wait=False, cancel_futures=True)

    async def _lane(self, js: JetStreamContext, subs: dict[str, JetStreamContext.PullSubscription]) -> None:
        while not self._stopping.is_set():
            for model in list(self._lost_consumers):
                self._lost_consumers.discard(model)
                subs[model] = await self._resubscribe(js, model, subs[model])
            # Loaded models first: a batch for them starts without a load.
            order = sorted(subs, key=lambda m: not self._engine.registry.is_loaded(m))
            for model in order:
                try:
                    msgs = await subs[model].fetch(1, timeout=1)
                except TimeoutError:
                    continue
                except Exception as exc:  # broker restarting: short pause, fetch again
                    log.warning("fetch for %s failed: %s", model, type(exc).__name__)
                    await asyncio.sleep(1)
                    subs[model] = await self._resubscribe(js, model, subs[model])
                    continue
                for msg in msgs:
                    try:
                        await self._handle(js, msg)
                    except Exception as exc:
                        # The broker went away mid-batch (its events could not be stored): the batch
                        # is not acked, so it comes back after the ack-wait; this worker goes on.
                        log.warning("batch at stream seq %s not finished: %s",
                                    msg.metadata.sequence.stream, type(exc).__name__)
                if self._stopping.is_set():
                    break

    async def _resubscribe(self, js: JetStreamContext, model: str,
                           sub: JetStreamContext.PullSubscription) -> JetStreamContext.PullSubscription:
        """A broker that lost its store lost the streams and this model's consumer: create them again
        (while it is away this fails, and the next fetch failure tries again)."""
        try:
            await ensure_streams(js, self._subjects)
            fresh = await self._subscribe(js, model)
        except Exception:
            return sub
        with contextlib.suppress(Exception):
            await sub.unsubscribe()
        return fresh

    async def _handle(self, js: JetStreamContext, msg: Msg) -> None:
        delivered = msg.metadata.num_delivered
        try:
            dispatch = decode_dispatch(msg.data)
        except WireError as exc:
            log.error("dispatch at stream seq %s terminated: %s", msg.metadata.sequence.stream, exc)
            await msg.term()
            return
        if delivered > MAX_DELIVERIES:
            for job in dispatch.jobs:
                await self._event(js, dispatch, job.job_id, "failed", reason=GAVE_UP)
            await msg.ack()
            return
        keep = asyncio.create_task(self._keep_lease(msg))
        try:
            interrupted = await self._render_dispatch(js, dispatch, attempt=delivered)
        finally:
            keep.cancel()
            with contextlib.suppress(BaseException):
                await keep
        if self._stopping.is_set() and interrupted:
            # Stopped mid-batch: hand it back at once instead of waiting out the ack-wait.
            await msg.nak()
        else:
            await msg.ack()

    # -- cancels -----------------------------------------------------------------------------------

    async def _on_cancel(self, msg: Msg) -> None:
        key = msg.subject.rsplit(".", 1)[-1]
        if key.isdigit():
            self._cancelled.add(int(key))

    async def _is_cancelled(self, job_id: int) -> bool:
        """From the updates seen, or the bucket itself: a cancel put before this worker subscribed (a
        redelivered batch) or whose update is still on its way."""
        if job_id in self._cancelled:
            return True
        if self._cancels is None:
            return False
        try:
            await self._cancels.get(str(job_id))
        except nats.js.errors.KeyNotFoundError:
            return False
        except Exception as exc:  # broker away for a moment: render it; the bot ignores its result
            log.warning("reading the cancels of job %s failed: %s", job_id, type(exc).__name__)
            return False
        self._cancelled.add(job_id)
        return True

    def _all_cancelled(self, ids: list[int]) -> bool:
        # Read from the render thread: a plain set lookup, safe under the GIL.
        return all(job_id in self._cancelled for job_id in ids)

    async def _my_turn(self, ids: list[int]) -> bool:
        """Wait for the render thread; False (without it) once every job of the batch was cancelled."""
        while not self._all_cancelled(ids):
            try:
                await asyncio.wait_for(self._render_turn.acquire(), CANCEL_POLL_S)
                return True
            except TimeoutError:
                continue
        return False

    async def _keep_lease(self, msg: Msg) -> None:
        while True:
            await asyncio.sleep(self._options.ack_wait / 3)
            with contextlib.suppress(Exception):
                await msg.in_progress()

    async def _render_dispatch(self, js: JetStreamContext, dispatch: Dispatch, *, attempt: int) -> bool:
        """Render a dispatch's jobs and report each; True when a stop interrupted it."""
        one_by_one = attempt > 1
        live: list[tuple[DispatchJob, RenderRequest, Image.Image | None]] = []
        for job in dispatch.jobs:
            try:
                request = RenderRequest.from_json(job.request)
            except (KeyError, TypeError, ValueError):
                log.error("job %s of dispatch %s has an unreadable request", job.job_id, dispatch.dispatch_id)
                await self._event(js, dispatch, job.job_id, "failed", reason=BAD_REQUEST)
                continue
            source = None
            if request.kind != Kind.TXT2IMG:
                try:
                    data = await get_blob(js, self._subjects, (request.source or "").removesuffix(".png"))
                    source = Image.open(io.BytesIO(data)).convert("RGB")
                    if request.kind == Kind.CANVAS and request.mask is not None:
                        # A member's mask travels in the blob stream like the source (generation/masks.py).
                        data = await get_blob(js, self._subjects, request.mask.removesuffix(".png"))
                        source = attach_mask(source, Image.open(io.BytesIO(data)))
                except (WireError, OSError) as exc:
                    log.warning("job %s: source image unavailable: %s", job.job_id, exc)
                    await self._event(js, dispatch, job.job_id, "failed", reason=SOURCE_GONE)
                    continue
            live.append((job, request, source))
            await self._event(js, dispatch, job.job_id, "started", attempt=attempt)
        groups = [[item] for item in live] if one_by_one else [live] if live else []
        while groups:
            group = groups.pop(0)
            if self._stopping.is_set():
                return True
            try:
                await self._render_group(js, dispatch, group)
            except RenderCancelled:
                return True
            except Exception as exc:
                if len(group) > 1:
                    # One member's request must not fail the others: each runs alone.
                    log.warning("batch %s failed (%r); rendering its jobs one by one",
                                dispatch.dispatch_id, exc)
                    groups = [[item] for item in group] + groups
                    continue
                job = group[0][0]
                if isinstance(exc, AtelierError):
                    reason, retryable = exc.user_message, False
                else:
                    log.exception("render of job %s failed", job.job_id)
                    reason, retryable = UNEXPECTED, True
                await self._event(js, dispatch, job.job_id, "failed", reason=reason, retryable=retryable)
        return False

    async def _render_group(
        self, js: JetStreamContext, dispatch: Dispatch,
        group: list[tuple[DispatchJob, RenderRequest, Image.Image | None]],
    ) -> None:
        """Render one group when the render thread is free and upload what it made. Jobs cancelled before
        their render are dropped; a render whose jobs are all cancelled stops at the next step; a job
        cancelled while others of its batch go on is not uploaded."""
        if not await self._my_turn([job.job_id for job, _, _ in group]):
            for job, _, _ in group:
                await self._event(js, dispatch, job.job_id, "cancelled")
            return
        try:
            live = []
            for item in group:
                if await self._is_cancelled(item[0].job_id):
                    await self._event(js, dispatch, item[0].job_id, "cancelled")
                else:
                    live.append(item)
            if not live:
                return
            rendered, seconds = await self._render_now(js, live)
        except RenderCancelled:
            if self._stopping.is_set():
                raise
            for job, _, _ in live:
                await self._event(js, dispatch, job.job_id, "cancelled")
            return
        finally:
            self._render_turn.release()
        # The upload runs beside the next batch's render.
        total_images = sum(len(images) for images in rendered) or 1
        for (job, request, _), images in zip(live, rendered, strict=True):
            if job.job_id in self._cancelled:
                await self._event(js, dispatch, job.job_id, "cancelled")
                continue
            await self._upload(js, dispatch, job, request, images,
                               render_seconds=seconds * len(images) / total_images)

    async def _render_now(
        self, js: JetStreamContext, group: list[tuple[DispatchJob, RenderRequest, Image.Image | None]],
    ) -> tuple[list[list[Image.Image]], float]:
        """The render itself, on the render thread (the caller holds its turn)."""
        loop = asyncio.get_running_loop()
        ids = [job.job_id for job, _, _ in group]
        requests = [request for _, request, _ in group]
        sources = None if requests[0].kind == Kind.TXT2IMG else [s for _, _, s in group]
        last = [0.0]

        def on_progress(step: int, total: int, previews: list[Image.Image]) -> None:
            self._step = (step, total)
            now = time.monotonic()
            if now - last[0] < PROGRESS_EVERY_S and step < total:
                return
            last[0] = now
            for i, job_id in enumerate(ids):
                preview = _preview_text(previews[i]) if i < len(previews) else ""
                message = encode(Progress(job_id=job_id, step=step, total=total, preview=preview))
                loop.call_soon_threadsafe(self._publish_progress, js, job_id, message)

        def should_stop() -> bool:
            return self._stopping.is_set() or self._all_cancelled(ids)

        self._busy[:] = ids
        self._step = (0, requests[0].steps)
        started = time.perf_counter()
        self._state = "rendering"
        try:
            rendered = await self._engine.call(self._engine.render, requests, sources,
                                               on_progress=on_progress, should_stop=should_stop)
        finally:
            self._state = "idle"
            self._busy.clear()
            self._step = (0, 0)
        seconds = time.perf_counter() - started
        spent, count = self._render_time.get(requests[0].model, (0.0, 0))
        self._render_time[requests[0].model] = (spent + seconds, count + sum(len(i) for i in rendered))
        self._jobs_done += len(rendered)
        return rendered, seconds

    async def _upload(self, js: JetStreamContext, dispatch: Dispatch, job: DispatchJob,
                      request: RenderRequest, images: list[Image.Image], *, render_seconds: float) -> None:
        def check() -> list[bool]:
            checker = self._engine.safety_checker(request.model)
            return checker.check(images) if checker is not None else [False] * len(images)

        flags = await self._engine.call(check)
        refs = []
        for index, image in enumerate(images):
            png = await asyncio.to_thread(encode_png, image, image_params(request, index))
            digest = await put_blob(js, self._subjects, png)
            refs.append(ImageRef(index=index, seed=request.seeds[index], width=image.width,
                                 height=image.height, sha256=digest, size=len(png), nsfw=flags[index]))
        await self._event(js, dispatch, job.job_id, "done", images=tuple(refs), render_seconds=render_seconds)

    def _publish_progress(self, js: JetStreamContext, job_id: int, message: bytes) -> None:
        # Plain NATS, not JetStream: a lost progress message is harmless and the next one replaces it.
        if self._nc is None:
            return
        task = asyncio.ensure_future(self._nc.publish(self._subjects.progress(job_id), message))
        self._sending.add(task)
        task.add_done_callback(self._sending.discard)

    async def _event(self, js: JetStreamContext, dispatch: Dispatch, job_id: int, kind: str, *,
                     images: tuple[ImageRef, ...] = (), render_seconds: float = 0.0, reason: str = "",
                     retryable: bool = False, attempt: int = 1) -> None:
        event = Event(kind=kind, job_id=job_id, dispatch_id=dispatch.dispatch_id,  # type: ignore[arg-type]
                      worker=self._options.name, images=images, render_seconds=render_seconds,
                      reason=reason, retryable=retryable, attempt=attempt)
        # The msg id makes a repeat of the same event (a redelivered batch) a no-op inside the window.
        msg_id = f"{dispatch.dispatch_id}.{job_id}.{kind}.{attempt}"
        await js.publish(self._subjects.events(job_id), encode(event), headers={MSG_ID_HEADER: msg_id})


def _preview_text(image: Image.Image) -> str:
    small = image.copy()
    small.thumbnail((PREVIEW_SIDE, PREVIEW_SIDE))
    buffer = io.BytesIO()
    small.save(buffer, format="PNG")
    return base64.b64encode(buffer.getvalue()).decode()


async def serve(url: str, engine: Engine, options: WorkerOptions) -> None:
    """Connect (retrying while the broker is down) and render until SIGTERM / SIGINT."""
    nc, js = await connect(url, f"atelier-worker-{options.name}")
    worker = RemoteWorker(engine, options)
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        with contextlib.suppress(NotImplementedError):
            loop.add_signal_handler(sig, worker.stop)
    try:
        await worker.run(nc, js)
    finally:
        with contextlib.suppress(Exception):
            await nc.drain()
