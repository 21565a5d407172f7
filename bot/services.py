"""The composition root's parts: settings -> database -> blob store -> models -> engine -> scheduler.
Discord-free on purpose, so the demo and tests can open the same services the bot runs on."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import sqlite3
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, ParamSpec, TypeVar

from bot.config import Settings
from generation import threads
from generation.caption import Captioner
from generation.engine import Engine
from generation.metrics import parse_addr
from generation.models import ModelCatalog, ModelRegistry
from generation.scheduler import Scheduler
from storage.blobs import BlobStore, SweepResult
from storage.db import Database
from storage.lock import ProcessLock

if TYPE_CHECKING:
    from PIL import Image

    from generation.metrics import Metrics
    from generation.remote.dispatcher import RemoteBackend
    from generation.remote.watchdog import Watchdog

log = logging.getLogger(__name__)

P = ParamSpec("P")
T = TypeVar("T")

# Files no image or job needs any more are removed once they are this old (and deleted images once
# deleted this long ago): time for Undo and for moderators to review, and no race with a job being made.
BLOB_GRACE_S = 7 * 24 * 3600
BLOB_SWEEP_INTERVAL_S = 6 * 3600
BLOB_SWEEP_FIRST_S = 60.0  # not during start-up


class StartupFailed(Exception):
    """The bot cannot start in this environment (bad settings, unusable data dir, model, Discord).

    Its message is one line for the operator; `atelier run` prints it and exits non-zero, so systemd or
    Docker see the failure instead of a process that hangs."""


def _unusable(data_dir: Path, exc: BaseException) -> StartupFailed:
    reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
    return StartupFailed(f"the data dir {data_dir} is not usable: {reason}")


def open_registry(settings: Settings, sources: list[tuple[str, str]], device: str | None = None
                  ) -> ModelRegistry:
    """The models `sources` with the operator's settings (the bot's and an `atelier worker`'s)."""
    return ModelRegistry(sources, settings.data_dir, device=device or settings.device,
                         dtype=settings.dtype, compile=settings.compile,
                         max_loaded=settings.max_loaded_models,
                         tiny_nsfw_threshold=settings.tiny_nsfw_threshold,
                         safety_checker=settings.safety_checker, offload=settings.offload,
                         lora_dir=settings.lora_dir,
                         lora_hotswap_rank=settings.lora_max_rank if settings.compile else None)


async def _open_remote(settings: Settings, db: Database, blobs: BlobStore
                       ) -> tuple[Scheduler, RemoteBackend, Watchdog]:
    """Remote mode's scheduler, broker connection and watchdog. Jobs a worker may still be rendering are
    adopted before the connection delivers their events. A broker that refuses us is a one-line
    StartupFailed; one that is down is connected to in the background."""
    from generation.remote.broker import BrokerRefused
    from generation.remote.dispatcher import RemoteBackend
    from generation.remote.watchdog import Watchdog
    from generation.remote.wire import Subjects, WireError

    assert settings.broker_url is not None
    try:
        backend = RemoteBackend(settings.broker_url.get_secret_value(), Subjects(settings.broker_prefix),
                                settings.lora_dir or settings.data_dir / "loras",
                                remembered=settings.data_dir / "remote-models.json")
    except WireError as exc:
        raise StartupFailed(str(exc)) from None
    scheduler = Scheduler(db, None, blobs, max_batch=settings.max_batch,
                          max_queued_per_user=settings.queue_max_per_user,
                          max_queued_total=settings.queue_max_total, runner=backend.runner(db, blobs))
    watchdog = Watchdog(backend, db, lease_owner=scheduler.lease_owner, readmit=scheduler.readmit)
    # Before the scheduler's recovery, which would count every running job as abandoned.
    await watchdog.adopt()
    try:
        await backend.start()
    except BaseException as exc:
        await watchdog.stop()
        await backend.close()
        if isinstance(exc, BrokerRefused):
            raise StartupFailed(str(exc)) from None
        raise
    return scheduler, backend, watchdog


@dataclass
class Services:
    settings: Settings
    db: Database
    blobs: BlobStore
    engine: Engine | None  # None with remote workers: the bot loads no model
    scheduler: Scheduler
    lock: ProcessLock
    # ATELIER_BROKER_URL: renders happen in `atelier worker` processes; their announcements are the catalog.
    remote: RemoteBackend | None = None
    # ATELIER_CAPTION_MODEL: /describe's model, loaded on first use (None: /describe is not configured).
    captioner: Captioner | None = None
    # Remote mode: requeues running jobs that no worker has and the broker lost; adopts them at start.
    watchdog: Watchdog | None = None
    # Whether closing these services closes the engine too (its threads): an engine passed in is not ours.
    owns_engine: bool = False
    # ATELIER_METRICS_ADDR: the Prometheus exporter.
    metrics: Metrics | None = field(default=None, init=False, repr=False)
    _sweeper: asyncio.Task[None] | None = field(default=None, init=False, repr=False)

    @property
    def registry(self) -> ModelCatalog:
        if self.remote is not None:
            return self.remote.models
        assert self.engine is not None
        return self.engine.registry

    async def model_call(self, fn: Callable[P, T], *args: P.args, **kwargs: P.kwargs) -> T:
        """Model work for a command (a caption, /shorten): between two steps of the render running, without a
        second thread slowing it (Engine.side_call). Remote mode renders nothing here: a plain thread."""
        if self.engine is not None:
            return await self.engine.side_call(fn, *args, **kwargs)
        return await asyncio.to_thread(fn, *args, **kwargs)

    async def looks_nsfw(self, model: str, image: Image.Image) -> bool:
        """`model`'s safety checker's verdict on a member's image (False in remote mode: no model here)."""
        engine = self.engine
        if engine is None:
            return False

        def check() -> bool:
            checker = engine.safety_checker(model)
            return checker is not None and checker.check([image.convert("RGB")])[0]

        return await engine.side_call(check)

    @classmethod
    async def open(cls, settings: Settings, *, engine: Engine | None = None) -> Services:
        services = await cls._open_locked(settings, engine=engine)
        if settings.caption_model:
            services.captioner = Captioner(settings.caption_model, settings.data_dir, device=settings.device)
        return services

    @classmethod
    async def _open_locked(cls, settings: Settings, *, engine: Engine | None = None) -> Services:
        data_dir = settings.data_dir
        try:
            sources = settings.model_sources()
            if settings.metrics_addr:
                parse_addr(settings.metrics_addr)
        except ValueError as exc:
            raise StartupFailed(str(exc)) from None
        try:
            data_dir.mkdir(parents=True, exist_ok=True)
            # Before anything touches the jobs: a second bot on this data dir would steal running jobs.
            lock = ProcessLock(data_dir / "atelier.lock")
            lock.acquire()
        except OSError as exc:
            raise _unusable(data_dir, exc) from None
        try:
            return await cls._open(settings, sources, lock, engine)
        except BaseException:
            lock.release()
            raise

    @classmethod
    async def _open(cls, settings: Settings, sources: list[tuple[str, str]], lock: ProcessLock,
                    engine: Engine | None) -> Services:
        data_dir = settings.data_dir
        try:
            db = await Database.open(data_dir / "atelier.db")
        except (OSError, sqlite3.Error) as exc:
            raise _unusable(data_dir, exc) from None
        # aiosqlite's thread is not a daemon: a database left open keeps a failed start from ever exiting.
        owned = False  # an engine made here is closed here; one passed in (tests, the demo) is its caller's
        try:
            try:
                blobs = BlobStore(data_dir / "images")
            except OSError as exc:
                raise _unusable(data_dir, exc) from None
            if settings.broker_url is not None and engine is None:
                scheduler, remote, watchdog = await _open_remote(settings, db, blobs)
                return cls(settings, db, blobs, None, scheduler, lock, remote, watchdog=watchdog)
            if engine is None:
                owned = True
                try:
                    registry = open_registry(settings, sources)
                except ValueError as exc:
                    raise StartupFailed(str(exc)) from None
                # ATELIER_TORCH_THREADS: the render thread's intra-op threads (default: every core; measured
                # faster on CPU than leaving the event loop a core, bench/e2e.py).
                engine = Engine(registry, preview_interval_s=settings.preview_interval,
                                threads=settings.torch_threads)
            # Reference images (--sref ...) and their cached embeddings live in this data dir's blob store.
            engine.embeddings.blobs = blobs
            # Before the scheduler and the gateway exist, so no job waits on loading or compiling a model
            # (a no-op for an engine already warm).
            await engine.call(engine.warm_up, max_batch=settings.max_batch)
            log.info("torch uses %d threads on the render thread (ATELIER_TORCH_THREADS)",
                     await engine.call(threads.current))
            scheduler = Scheduler(db, engine, blobs, max_batch=settings.max_batch,
                                  max_queued_per_user=settings.queue_max_per_user,
                                  max_queued_total=settings.queue_max_total)
        except BaseException:
            if owned and engine is not None:
                await asyncio.to_thread(engine.close)  # its threads would outlive the failed start
            await db.close()
            raise
        return cls(settings, db, blobs, engine, scheduler, lock, owns_engine=owned)

    async def start(self) -> None:
        """Start the scheduler; if that fails, everything opened is closed (lock released) before raising."""
        try:
            await self.scheduler.start()
            if self.watchdog is not None:
                self.watchdog.start(self.scheduler.take_over)
            if self.settings.metrics_addr:
                self._start_metrics(self.settings.metrics_addr)
        except BaseException as exc:
            await self.close()
            if isinstance(exc, sqlite3.Error):  # e.g. another process holding the database locked
                raise StartupFailed(f"the job queue could not be read from {self.db.path}: {exc}") from None
            raise
        self._sweeper = asyncio.create_task(self._sweep_blobs(), name="atelier-blob-sweep")

    def _start_metrics(self, addr: str) -> None:
        from generation.metrics import Metrics

        metrics = Metrics()
        try:
            metrics.serve(addr)
        except OSError as exc:
            reason = exc.strerror or exc
            raise StartupFailed(f"the metrics address {addr} cannot be served: {reason}") from None
        self.metrics = metrics
        metrics.follow(self.scheduler, self.db, self.blobs,
                       self.remote.worker_states if self.remote is not None else None)

    async def collect_blobs(self, grace_s: float = BLOB_GRACE_S) -> SweepResult:
        """Remove the image files nothing references any more (see BlobStore.sweep)."""
        cutoff = time.time() - grace_s
        # The referenced set first, then the files: a blob written after this query is young.
        referenced = await self.db.images.referenced_blobs(deleted_before=cutoff)
        result = await asyncio.to_thread(self.blobs.sweep, referenced, cutoff)
        if result.removed:
            log.info("blob sweep removed %d files (%d bytes)", result.removed, result.freed_bytes)
        return result

    async def _sweep_blobs(self) -> None:
        await asyncio.sleep(BLOB_SWEEP_FIRST_S)
        while True:
            try:
                await self.collect_blobs()
            except Exception:  # a full disk or a locked database now: try again next time
                log.exception("blob sweep failed")
            await asyncio.sleep(BLOB_SWEEP_INTERVAL_S)

    async def close(self) -> None:
        if self._sweeper is not None:
            self._sweeper.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._sweeper
        try:
            if self.metrics is not None:
                await self.metrics.close()
            if self.watchdog is not None:
                await self.watchdog.stop()
            await self.scheduler.stop()
            if self.owns_engine and self.engine is not None:
                await asyncio.to_thread(self.engine.close)
        finally:
            try:
                if self.remote is not None:
                    await self.remote.close()
                await self.db.close()
            finally:
                self.lock.release()
