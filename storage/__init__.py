"""Storage: SQLite (aiosqlite) for jobs, images, galleries, settings, moderation, audit and stats;
content-addressed image files on disk. Imports nothing else of ours."""

from storage.blobs import BlobStore
from storage.db import Database
from storage.errors import SchemaTooNew, StorageError
from storage.images import ImageRow, NewImage
from storage.jobs import CapExceeded, JobRow

__all__ = [
    "BlobStore",
    "CapExceeded",
    "Database",
    "ImageRow",
    "JobRow",
    "NewImage",
    "SchemaTooNew",
    "StorageError",
]
