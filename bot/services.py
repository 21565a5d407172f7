"""The composition root's parts: settings -> database -> blob store -> models -> engine -> scheduler.
Discord-free on purpose, so the demo and tests can open the same services the bot runs on."""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass

from bot.settings import Settings
from generation.engine import Engine
from generation.models import ModelRegistry
from generation.scheduler import Scheduler
from storage.blobs import BlobStore
from storage.db import Database
from storage.lock import ProcessLock

log = logging.getLogger(__name__)


@dataclass
class Services:
    settings: Settings
    db: Database
    blobs: BlobStore
    engine: Engine
    scheduler: Scheduler
    lock: ProcessLock

    @property
    def registry(self) -> ModelRegistry:
        return self.engine.registry

    @classmethod
    async def open(cls, settings: Settings, *, engine: Engine | None = None) -> Services:
        data_dir = settings.data_dir
        data_dir.mkdir(parents=True, exist_ok=True)
        # Before anything touches the jobs: a second bot on this data dir would steal running jobs.
        lock = ProcessLock(data_dir / "atelier.lock")
        lock.acquire()
        try:
            return await cls._open(settings, lock, engine)
        except BaseException:
            lock.release()
            raise

    @classmethod
    async def _open(cls, settings: Settings, lock: ProcessLock, engine: Engine | None) -> Services:
        data_dir = settings.data_dir
        db = await Database.open(data_dir / "atelier.db")
        blobs = BlobStore(data_dir / "images")
        if engine is None:
            registry = ModelRegistry(settings.model_sources(), data_dir, device=settings.device,
                                     compile=settings.compile, max_loaded=settings.max_loaded_models,
                                     tiny_nsfw_threshold=settings.tiny_nsfw_threshold,
                                     safety_checker=settings.safety_checker)
            engine = Engine(registry)
            # The first user should not pay for loading and warming the default model.
            await asyncio.to_thread(engine.warm_up)
        scheduler = Scheduler(db, engine, blobs, max_batch=settings.max_batch,
                              max_queued_per_user=settings.queue_max_per_user,
                              max_queued_total=settings.queue_max_total)
        return cls(settings, db, blobs, engine, scheduler, lock)

    async def start(self) -> None:
        await self.scheduler.start()

    async def close(self) -> None:
        try:
            await self.scheduler.stop()
        finally:
            try:
                await self.db.close()
            finally:
                self.lock.release()
