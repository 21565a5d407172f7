"""Retrying storage work through faults that waiting can cure: a database locked by another writer for
longer than the busy timeout, a disk that is full for a while (logs rotate, an operator frees space).

Every operation retried here is idempotent (the job transitions say when a repeat is harmless; blob
writes are content-addressed), so running one again after a failure is safe. When the retries run out
the fault becomes a StorageUnavailable whose reason a member can read.
"""

from __future__ import annotations

import asyncio
import errno
import logging
import sqlite3
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import TypeVar

from storage.errors import StorageUnavailable

log = logging.getLogger(__name__)

T = TypeVar("T")

# About 15 s of waiting on top of each attempt's own busy timeout.
DEFAULT_DELAYS: tuple[float, ...] = (0.5, 1.0, 2.0, 4.0, 8.0)

DISK_FULL = "the server's disk is full"
DATABASE_BUSY = "the server's database stayed busy"


def transient_reason(exc: BaseException) -> str | None:
    """What a storage fault means for a member if waiting may cure it; None for any other error."""
    if isinstance(exc, sqlite3.OperationalError):
        text = str(exc).lower()
        if "full" in text:  # SQLITE_FULL: "database or disk is full"
            return DISK_FULL
        if "locked" in text or "busy" in text:
            return DATABASE_BUSY
    if isinstance(exc, OSError) and exc.errno in (errno.ENOSPC, errno.EDQUOT):
        return DISK_FULL
    return None


def _give_up_or_wait(exc: Exception, what: str, delay: float | None) -> None:
    reason = transient_reason(exc)
    if reason is None:
        raise exc
    if delay is None:
        log.error("%s failed: %s; giving up after retries", what, exc)
        raise StorageUnavailable(reason) from exc
    log.warning("%s failed: %s; retrying in %.1f s", what, exc, delay)


async def retry_async(op: Callable[[], Awaitable[T]], what: str,
                      delays: Sequence[float] = DEFAULT_DELAYS) -> T:
    for delay in [*delays, None]:
        try:
            return await op()
        except Exception as exc:
            _give_up_or_wait(exc, what, delay)
            assert delay is not None
            await asyncio.sleep(delay)
    raise AssertionError("unreachable")


def retry_sync(op: Callable[[], T], what: str, delays: Sequence[float] = DEFAULT_DELAYS) -> T:
    """The same for worker threads (blob writes happen beside the render, off the event loop)."""
    for delay in [*delays, None]:
        try:
            return op()
        except Exception as exc:
            _give_up_or_wait(exc, what, delay)
            assert delay is not None
            time.sleep(delay)
    raise AssertionError("unreachable")
