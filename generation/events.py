"""Job events for the bot to consume, and the async stream that carries them.

Events say what happened, not what it produced: the jobs and images tables hold the results and the
reasons (the bot reads them there, so a redelivery after a restart shows the same thing).

Events are created on the loop thread (the worker thread hands them over with
`loop.call_soon_threadsafe`), so streams need no locks.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass

from PIL import Image


@dataclass(frozen=True)
class JobQueued:
    job_id: int
    position: int
    eta_s: float
    paused: bool = False  # held: this guild's moderators paused the queue


@dataclass(frozen=True)
class JobStarted:
    job_id: int


@dataclass(frozen=True)
class JobProgress:
    job_id: int
    step: int
    total: int
    preview: Image.Image | None = None


@dataclass(frozen=True)
class JobRendered:
    """The render ended: `grid` is the fast-encoded grid (JPEG) to show at once, while the lossless PNGs
    are written. The one event that carries a product: that image is shown and never stored (the job is
    done, and its final message made from the stored files, only once they are written). `nsfw` is the
    safety checker's verdict on any of the job's images."""

    job_id: int
    grid: bytes
    nsfw: bool


@dataclass(frozen=True)
class JobDone:
    job_id: int


@dataclass(frozen=True)
class JobFailed:
    job_id: int


@dataclass(frozen=True)
class JobCancelled:
    job_id: int


JobEvent = JobQueued | JobStarted | JobProgress | JobRendered | JobDone | JobFailed | JobCancelled
TERMINAL = (JobDone, JobFailed, JobCancelled)

# A subscriber that stops reading must not grow memory without bound: past this many waiting
# events, new progress events are dropped (the next one supersedes them anyway).
MAX_BACKLOG = 256


class EventStream:
    """Async iterator of events for one job (ends after its final event) or for all jobs
    (`job_id=None`, ends on close()). Several streams may watch the same job."""

    def __init__(self, job_id: int | None, on_close: Callable[[EventStream], None]) -> None:
        self.job_id = job_id
        self._queue: asyncio.Queue[JobEvent | None] = asyncio.Queue()
        self._on_close = on_close
        self._closed = False

    def push(self, event: JobEvent) -> None:
        if self._closed:
            return
        if isinstance(event, JobProgress) and self._queue.qsize() >= MAX_BACKLOG:
            return
        self._queue.put_nowait(event)
        if self.job_id is not None and isinstance(event, TERMINAL):
            self.close()

    def close(self) -> None:
        if not self._closed:
            self._closed = True
            self._queue.put_nowait(None)
            self._on_close(self)

    @property
    def closed(self) -> bool:
        return self._closed

    def __aiter__(self) -> EventStream:
        return self

    async def __anext__(self) -> JobEvent:
        event = await self._queue.get()
        if event is None:
            # Stay ended for any later call too.
            self._queue.put_nowait(None)
            raise StopAsyncIteration
        return event

    async def next(self) -> JobEvent | None:
        """The next event, or None once the stream has ended."""
        try:
            return await self.__anext__()
        except StopAsyncIteration:
            return None
