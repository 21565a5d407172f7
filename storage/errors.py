"""Storage's own errors (storage imports nothing else of ours)."""

from __future__ import annotations


class StorageError(Exception):
    """Base of storage errors."""


class SchemaTooNew(StorageError):
    """The database was written by a newer Atelier than this one."""


class CorruptBlob(StorageError):
    """An image file's bytes no longer match its content address (truncated or damaged on disk)."""


class StorageUnavailable(StorageError):
    """The database stayed locked, or the disk stayed full, through every retry.

    `reason` is short and plain ("the server's disk is full"): members see it in their job's message."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason
