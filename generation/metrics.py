"""Prometheus metrics (ATELIER_METRICS_ADDR): jobs by status, queue depth, wait and render seconds per
model, redeliveries, workers by state and result bytes.

Everything is computed on the event loop from what the product already records (the scheduler's events,
the job rows, the stored images, the workers' announcements); the exporter's HTTP thread only reads the
values. Discord-free, and one registry per bot, so several bots in one process (tests) do not mix.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from threading import Thread
from wsgiref.simple_server import WSGIServer

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, start_http_server

from generation.events import (
    EventStream,
    JobCancelled,
    JobDone,
    JobEvent,
    JobFailed,
    JobQueued,
    JobStarted,
)
from generation.scheduler import Scheduler
from storage.blobs import BlobStore
from storage.db import Database

log = logging.getLogger(__name__)

# Renders take from a fraction of a second (a 4-step model on a big GPU) to minutes (CPU, SDXL).
SECONDS_BUCKETS = (0.5, 1, 2, 5, 10, 20, 30, 60, 120, 300, 600, 1800, 3600)
REFRESH_S = 2.0  # gauges follow the queue at least this often, events or not


def parse_addr(addr: str) -> tuple[str, int]:
    """`host:port` (or `:port` for every interface) of ATELIER_METRICS_ADDR; ValueError with the reason."""
    host, sep, port_text = addr.rpartition(":")
    if not sep or not port_text.isdigit() or not 0 < int(port_text) < 65536:
        raise ValueError(f"ATELIER_METRICS_ADDR {addr!r} must look like host:port (e.g. 127.0.0.1:9108)")
    return host.strip("[]") or "0.0.0.0", int(port_text)


@dataclass
class _Server:
    server: WSGIServer
    thread: Thread


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.ended = Counter("atelier_jobs_ended", "Jobs that ended, by final status", ["status"], registry=r)
        self.jobs = Gauge("atelier_jobs", "Jobs waiting or rendering now, by status", ["status"], registry=r)
        self.queue_depth = Gauge("atelier_queue_depth", "Jobs waiting in the fair queue", registry=r)
        self.wait = Histogram("atelier_job_wait_seconds", "From queued to started, per model", ["model"],
                              buckets=SECONDS_BUCKETS, registry=r)
        self.render = Histogram("atelier_job_render_seconds", "Render time of a done job, per model",
                                ["model"], buckets=SECONDS_BUCKETS, registry=r)
        self.redeliveries = Counter(
            "atelier_redeliveries", "Attempts past the first of ended jobs (a dead worker, a damaged image)",
            registry=r)
        self.workers = Gauge("atelier_workers", "Remote workers by state (idle, rendering, offline, ...)",
                             ["state"], registry=r)
        self.result_bytes = Counter("atelier_result_bytes", "Bytes of the images of done jobs", registry=r)
        self._server: _Server | None = None
        self._task: asyncio.Task[None] | None = None
        self._worker_states: Callable[[], dict[str, int]] | None = None
        self._states_seen: set[str] = set()

    def serve(self, addr: str) -> None:
        host, port = parse_addr(addr)
        server, thread = start_http_server(port, addr=host, registry=self.registry)
        self._server = _Server(server, thread)
        log.info("metrics on http://%s:%s/metrics", host, port)

    def follow(self, scheduler: Scheduler, db: Database, blobs: BlobStore,
               worker_states: Callable[[], dict[str, int]] | None = None) -> None:
        """Count what the scheduler reports from now on (subscribed at once: no event is missed)."""
        self._worker_states = worker_states
        stream = scheduler.subscribe()
        self._task = asyncio.create_task(self._follow(stream, scheduler, db, blobs), name="atelier-metrics")

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(BaseException):
                await self._task
        if self._server is not None:
            self._server.server.shutdown()
            self._server.server.server_close()
            self._server = None

    async def _follow(self, stream: EventStream, scheduler: Scheduler, db: Database, blobs: BlobStore
                      ) -> None:
        events = stream.__aiter__()
        while True:
            self._refresh(scheduler)
            try:
                event = await asyncio.wait_for(events.__anext__(), REFRESH_S)
            except TimeoutError:
                continue
            except StopAsyncIteration:
                return
            try:
                await self._count(event, db, blobs)
            except Exception:  # a metric must never take the bot down
                log.exception("metrics: counting %r failed", event)

    def _refresh(self, scheduler: Scheduler) -> None:
        entries = scheduler.snapshot()
        self.jobs.labels("running").set(sum(e.status == "running" for e in entries))
        self.jobs.labels("queued").set(sum(e.status == "queued" for e in entries))
        self.queue_depth.set(scheduler.queued_count)
        if self._worker_states is not None:
            states = self._worker_states()
            self._states_seen.update(states)  # a state seen before drops to 0, not out of the export
            for state in self._states_seen:
                self.workers.labels(state).set(states.get(state, 0))

    async def _count(self, event: JobEvent, db: Database, blobs: BlobStore) -> None:
        if isinstance(event, JobQueued):
            return
        if isinstance(event, JobStarted):
            row = await db.jobs.get(event.job_id)
            if row is not None and row.started_at is not None:
                model = str(row.request.get("model", ""))
                self.wait.labels(model).observe(max(0.0, row.started_at - row.created_at))
            return
        status = {JobDone: "done", JobFailed: "failed", JobCancelled: "cancelled"}.get(type(event))
        if status is None:
            return
        job_id = event.job_id
        self.ended.labels(status).inc()
        row = await db.jobs.get(job_id)
        if row is None:
            return
        self.redeliveries.inc(max(0, row.attempts - 1))
        if status == "done":
            model = str(row.request.get("model", ""))
            if row.render_seconds is not None:
                self.render.labels(model).observe(row.render_seconds)
            sizes = [blobs.path(image.blob) for image in await db.images.for_job(job_id)]
            self.result_bytes.inc(sum(await asyncio.gather(*(asyncio.to_thread(_size, p) for p in sizes))))


def _size(path: Path) -> int:
    try:
        return path.stat().st_size
    except OSError:
        return 0
