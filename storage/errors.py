"""Storage's own errors (storage imports nothing else of ours)."""

from __future__ import annotations


class StorageError(Exception):
    """Base of storage errors."""


class SchemaTooNew(StorageError):
    """The database was written by a newer Atelier than this one."""
