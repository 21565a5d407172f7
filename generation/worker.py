"""The worker: runs one batch of claimed jobs through the engine in ONE dedicated thread,
stores the PNGs, records the images and reports what happened as events.

A pipeline is not thread-safe and torch must never run on the event loop, so every render goes
through a single-thread executor. Events raised in that thread reach the loop through
`loop.call_soon_threadsafe`.
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from collections.abc import Awaitable, Callable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, replace
from functools import partial
from typing import Any, ParamSpec, Protocol, TypeVar

from PIL import Image

from generation.engine import StepGate
from generation.errors import AtelierError, RenderCancelled
from generation.events import (
    JobCancelled,
    JobDone,
    JobEvent,
    JobFailed,
    JobProgress,
    JobRendered,
    JobStarted,
)
from generation.images import encode_fast_grid, encode_grid, encode_png, image_params, make_grid
from generation.masks import attach_mask
from generation.request import Kind, RenderRequest
from generation.safety import SafetyChecker
from storage.blobs import BlobStore
from storage.db import Database
from storage.errors import StorageUnavailable
from storage.images import NewImage
from storage.retry import DEFAULT_DELAYS, retry_async, retry_sync

log = logging.getLogger(__name__)

P = ParamSpec("P")
T = TypeVar("T")

UNEXPECTED = "The renderer hit an unexpected error with this job; please try again."
SOURCE_GONE = "The source image of this job is no longer available."
BAD_REQUEST = "This job's stored request could not be read."


def not_saved(reason: str) -> str:
    """A member's explanation when storage failed through every retry (the render itself was fine)."""
    return f"The images could not be saved: {reason}. Please try again later, or tell the server's admins."


class RenderBackend(Protocol):
    """What the worker needs of generation.engine.Engine."""

    def render(
        self,
        requests: Sequence[RenderRequest],
        sources: Sequence[Image.Image | None] | None = None,
        *,
        on_progress: Callable[[int, int, list[Image.Image]], None] | None = None,
        should_stop: Callable[[], bool] | None = None,
    ) -> list[list[Image.Image]]: ...

    def safety_checker(self, model: str) -> SafetyChecker | None: ...

    async def call(self, fn: Callable[P, T], *args: P.args, **kwargs: P.kwargs) -> T:
        """Run `fn` on the engine's one torch thread."""
        ...

    def settle(self) -> None: ...


ENCODE_THREADS = max(2, min(4, os.cpu_count() or 2))

# Test-only: `atelier run` as a subprocess holds each batch between its fast grid (shown) and its lossless
# files (stored) while the file at this path exists: the window a crash must not lose a job in.
STORE_HOLD_FILE_ENV = "ATELIER_TEST_STORE_HOLD_FILE"

@dataclass(frozen=True)
class BatchJob:
    job_id: int
    request: dict[str, Any]


@dataclass(frozen=True)
class _Batch:
    """Claimed jobs ready to render, with their sources and the scheduler's stop / cancel checks."""

    live: list[tuple[BatchJob, RenderRequest]]
    sources: list[Image.Image | None] | None
    should_stop: Callable[[], bool]
    is_cancelled: Callable[[int], bool]

    @property
    def ids(self) -> list[int]:
        return [job.job_id for job, _ in self.live]

    def only(self, i: int) -> _Batch:
        return replace(self, live=[self.live[i]], sources=None if self.sources is None else [self.sources[i]])


@dataclass(frozen=True)
class BatchOutcome:
    """For the ETA average: how long the render took and how many images it made."""

    render_seconds: float
    images: int


class BatchRunner(Protocol):
    """What the scheduler hands a fair batch to: this module's Worker (in-process), or the remote backend
    (generation.remote.dispatcher) when renders happen in `atelier worker` processes."""

    async def run(
        self,
        jobs: Sequence[BatchJob],
        *,
        should_stop: Callable[[], bool],
        is_cancelled: Callable[[int], bool],
    ) -> BatchOutcome | None: ...

    def close(self) -> None: ...

    def can_start(self, model: str, in_flight: Sequence[str]) -> bool:
        """May a batch of `model` start now, beside the batches of `in_flight` (their models) still
        running? The scheduler asks before each take, so a batch starts only where it can run."""
        ...


class JobsLost(Exception):
    """Raised by a runner whose render backend lost jobs of the batch (remote mode: no worker has them and
    the broker no longer holds them). The scheduler puts the batch's unfinished jobs back in the queue with
    the attempt refunded, as after a storage failure, but without blaming the storage."""


# Builds a scheduler's runner from the scheduler's event sink and lease owner.
RunnerFactory = Callable[[Callable[[JobEvent], None], str], BatchRunner]


class JobTransitions:
    """A runner's job transitions: each retried through a locked database or a full disk (each is
    idempotent) and its event emitted once. Shared by Worker and the remote runner."""

    _db: Database
    _emit: Callable[[JobEvent], None]
    _delays: tuple[float, ...]

    async def _stored(self, what: str, op: Callable[[], Awaitable[T]]) -> T:
        """A job transition, retried through a locked database or a full disk (each is idempotent)."""
        return await retry_async(op, what, self._delays)

    async def _fail(self, job_id: int, reason: str) -> None:
        if await self._stored(f"fail job {job_id}", lambda: self._db.jobs.fail(job_id, reason)):
            self._emit(JobFailed(job_id))

    async def _cancelled(self, job_id: int) -> None:
        if await self._stored(f"cancel job {job_id}", lambda: self._db.jobs.finish_cancelled(job_id)):
            self._emit(JobCancelled(job_id))


    async def _stopped(self, ids: list[int], is_cancelled: Callable[[int], bool]) -> None:
        """A render interrupted: its owners' cancels end those jobs; the rest were stopped by a shutdown,
        not by their owner, so they go back to the queue and the attempt does not count against them."""
        for job_id in ids:
            if is_cancelled(job_id):
                await self._cancelled(job_id)
        back = [i for i in ids if not is_cancelled(i)]
        await self._stored("requeue", lambda: self._db.jobs.requeue(back, refund_attempt=True))


class Worker(JobTransitions):
    def __init__(
        self,
        db: Database,
        engine: RenderBackend,
        blobs: BlobStore,
        *,
        emit: Callable[[JobEvent], None],
        lease_owner: str,
        lease_seconds: float,
        storage_retry_delays: Sequence[float] = DEFAULT_DELAYS,
    ) -> None:
        self._db = db
        # Waits between attempts of a storage step that hit a locked database or a full disk.
        self._delays = tuple(storage_retry_delays)
        self._engine = engine
        self._blobs = blobs
        self._emit = emit
        self._lease_owner = lease_owner
        self._lease_seconds = lease_seconds
        # Encoders: PNG compression of a batch's images and grids, beside the single render thread.
        self._encoders: ThreadPoolExecutor | None = None
        self.store_gate = StepGate(os.environ.get(STORE_HOLD_FILE_ENV) or None)

    def _encoder(self) -> ThreadPoolExecutor:
        if self._encoders is None:
            self._encoders = ThreadPoolExecutor(ENCODE_THREADS, thread_name_prefix="atelier-encode")
        return self._encoders

    def can_start(self, model: str, in_flight: Sequence[str]) -> bool:
        # One render thread, one pipeline: one batch at a time, whatever its model.
        return not in_flight

    def close(self) -> None:
        # The torch thread is the engine's (a bot restarted in one process keeps its engine): wait for
        # this worker's render to end there, without stopping the thread.
        self._engine.settle()
        if self._encoders is not None:
            self._encoders.shutdown(wait=True)
            self._encoders = None

    async def run(
        self,
        jobs: Sequence[BatchJob],
        *,
        should_stop: Callable[[], bool],
        is_cancelled: Callable[[int], bool],
    ) -> BatchOutcome | None:
        """Run one batch to its end: every job ends done, failed, cancelled or (on stop) queued."""
        # 1. Claim: queued -> running with a lease; a job cancelled meanwhile is skipped. If storage stays
        # unavailable the StorageUnavailable reaches the scheduler, which keeps the jobs queued.
        claimed = set(await self._stored("claim", lambda: self._db.jobs.claim(
            [j.job_id for j in jobs], lease_owner=self._lease_owner, lease_seconds=self._lease_seconds)))
        live: list[tuple[BatchJob, RenderRequest]] = []
        for job in jobs:
            if job.job_id not in claimed:
                continue
            self._emit(JobStarted(job.job_id))
            try:
                live.append((job, RenderRequest.from_json(job.request)))
            except (KeyError, TypeError, ValueError):
                log.exception("job %s has an unreadable request", job.job_id)
                await self._fail(job.job_id, BAD_REQUEST)
        if not live:
            return None

        # 2. Variations / upscales start from a stored image.
        sources: list[Image.Image | None] | None = None
        if live[0][1].kind != Kind.TXT2IMG:
            kept: list[tuple[BatchJob, RenderRequest]] = []
            sources = []
            for job, request in live:
                try:
                    if request.source is None:
                        raise KeyError("no source")
                    image = await asyncio.to_thread(self._blobs.open_image, request.source)
                    if request.kind == Kind.CANVAS and request.mask is not None:
                        mask = await asyncio.to_thread(self._blobs.open_image, request.mask)
                        image = attach_mask(image, mask)
                except (KeyError, ValueError, OSError):
                    await self._fail(job.job_id, SOURCE_GONE)
                    continue
                kept.append((job, request))
                sources.append(image)
            live = kept
            if not live:
                return None

        return await self._render(_Batch(live, sources, should_stop, is_cancelled))

    async def _render(self, batch: _Batch) -> BatchOutcome | None:
        # 3. Render and store, in the render thread.
        loop = asyncio.get_running_loop()
        ids = batch.ids
        on_progress, on_rendered = self._callbacks(loop, ids)
        requests = [request for _, request in batch.live]
        try:
            results, grids, seconds = await self._engine.call(
                self._render_and_store, requests, batch.sources, on_progress, batch.should_stop, on_rendered)
        except RenderCancelled:
            await self._stopped(ids, batch.is_cancelled)
            return None
        except StorageUnavailable as exc:
            # The files could not be written (full disk) through every retry. That is no request's fault:
            # rendering the batch again job by job would only fail the same way, slowly.
            log.error("jobs %s rendered but could not be stored: %s", ids, exc.reason)
            for job_id in ids:
                await self._fail(job_id, not_saved(exc.reason))
            return None
        except Exception as exc:
            if len(ids) > 1:
                # Batches mix users: one request's trouble must not fail the others. Each runs alone,
                # so only the job that really fails is failed.
                log.warning("batch of jobs %s failed (%r); running them one by one", ids, exc)
                return await self._one_by_one(batch)
            if isinstance(exc, AtelierError):
                reason = exc.user_message
            else:
                log.exception("render of job %s failed", ids[0])
                reason = UNEXPECTED
            await self._fail(ids[0], reason)
            return None

        # 4. Record: each job's images land once, with its share of the render time.
        total_images = sum(len(r) for r in results) or 1
        for job_id, images, grid in zip(ids, results, grids, strict=True):
            if batch.is_cancelled(job_id):
                await self._cancelled(job_id)
                continue
            share = seconds * len(images) / total_images
            first, _ = await self._stored(f"complete job {job_id}", partial(
                self._db.jobs.complete, job_id, images, render_seconds=share, grid_blob=grid))
            if first:
                self._emit(JobDone(job_id))
        return BatchOutcome(seconds, total_images)

    def _callbacks(self, loop: asyncio.AbstractEventLoop, ids: list[int]) -> tuple[
            Callable[[int, int, list[Image.Image]], None], Callable[[int, bytes, bool], None]]:
        """The render thread's progress and rendered hooks: each hands its event to the loop."""

        def on_progress(step: int, total: int, previews: list[Image.Image]) -> None:
            for i, job_id in enumerate(ids):
                preview = previews[i] if i < len(previews) else None
                loop.call_soon_threadsafe(self._emit, JobProgress(job_id, step, total, preview))

        def on_rendered(index: int, grid: bytes, nsfw: bool) -> None:
            loop.call_soon_threadsafe(self._emit, JobRendered(ids[index], grid, nsfw))

        return on_progress, on_rendered

    async def _one_by_one(self, batch: _Batch) -> BatchOutcome | None:
        seconds, images = 0.0, 0
        for i, job_id in enumerate(batch.ids):
            if batch.should_stop():
                await self._stopped(batch.ids[i:], batch.is_cancelled)
                break
            if batch.is_cancelled(job_id):
                await self._cancelled(job_id)
                continue
            outcome = await self._render(batch.only(i))
            if outcome is not None:
                seconds += outcome.render_seconds
                images += outcome.images
        return BatchOutcome(seconds, images) if images else None

    def _render_and_store(
        self,
        requests: list[RenderRequest],
        sources: list[Image.Image | None] | None,
        on_progress: Callable[[int, int, list[Image.Image]], None],
        should_stop: Callable[[], bool],
        on_rendered: Callable[[int, bytes, bool], None],
    ) -> tuple[list[list[NewImage]], list[str | None], float]:
        started = time.perf_counter()
        rendered = self._engine.render(requests, sources, on_progress=on_progress, should_stop=should_stop)
        seconds = time.perf_counter() - started
        # The member's view first: the safety verdict (the NSFW policy needs it to decide how to show the
        # grid) and a JPEG grid, tens of ms, handed to the bot before any PNG is encoded or file written.
        # The job stays running until its files are stored: a crash in between re-renders it.
        flags: list[list[bool]] = []
        for index, (request, images) in enumerate(zip(requests, rendered, strict=True)):
            checker = self._engine.safety_checker(request.model)
            flags.append(checker.check(images) if checker is not None else [False] * len(images))
            on_rendered(index, encode_fast_grid(make_grid(images)), any(flags[-1]))
        self.store_gate.hold(should_stop)  # a stop ends the hold; the files are stored either way
        # PNG encoding (zlib releases the GIL) runs on all cores at once: each image and each job's
        # grid in parallel, so the bytes are ready when the render thread moves on.
        pending: list[list[Future[str]]] = []
        grids: list[Future[str] | None] = []
        encoder = self._encoder()
        # Grids first: each is as big as its four images together, so longest-first keeps both
        # encoder threads busy to the end instead of leaving the grid to run alone.
        for request, images in zip(requests, rendered, strict=True):
            grids.append(encoder.submit(self._store_grid, images, request) if len(images) > 1 else None)
        for request, images in zip(requests, rendered, strict=True):
            pending.append([encoder.submit(self._store_png, image, image_params(request, index))
                            for index, image in enumerate(images)])
        out: list[list[NewImage]] = []
        for request, images, keys, nsfw in zip(requests, rendered, pending, flags, strict=True):
            out.append([
                NewImage(index, request.seeds[index], key.result(), image.width, image.height,
                         nsfw=nsfw[index])
                for index, (image, key) in enumerate(zip(images, keys, strict=True))
            ])
        return out, [grid.result() if grid is not None else None for grid in grids], seconds

    def _store_png(self, image: Image.Image, params: dict[str, Any]) -> str:
        return self._put(encode_png(image, params))

    def _store_grid(self, images: list[Image.Image], request: RenderRequest) -> str:
        return self._put(encode_grid(images, request))

    def _put(self, data: bytes) -> str:
        # Encoded once; only the write is retried (a full disk may get room when logs rotate).
        return retry_sync(lambda: self._blobs.put(data), "writing an image file", self._delays)
