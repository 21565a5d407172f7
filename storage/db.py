"""The one SQLite database: connection set-up, migrations and the stores that share it."""

from __future__ import annotations

import asyncio
import sqlite3
from pathlib import Path

import aiosqlite

from storage.audit import AuditStore
from storage.batches import BatchStore
from storage.connection import Connection
from storage.descriptions import DescriptionStore
from storage.gallery import GalleryStore
from storage.images import ImageStore
from storage.jobs import JobStore
from storage.migrations import migrate
from storage.moderation import ModerationStore
from storage.pauses import PauseStore
from storage.personal import PersonalStyleStore
from storage.settings import GuildSettingsStore, UserSettingsStore
from storage.stats import StatsStore
from storage.styles import StyleStore

BUSY_TIMEOUT_MS = 5000


def _prepare(path: Path, busy_timeout_ms: int) -> None:
    """Migrations run on a plain connection before aiosqlite takes the file."""
    conn = sqlite3.connect(path, isolation_level=None, timeout=busy_timeout_ms / 1000)
    try:
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("PRAGMA foreign_keys=ON")
        migrate(conn)
    finally:
        conn.close()


class Database:
    """Open with `await Database.open(path)`; the stores hang off it as attributes."""

    def __init__(self, path: Path, conn: aiosqlite.Connection) -> None:
        self.path = path
        self.connection = Connection(conn)
        self.jobs = JobStore(self.connection)
        self.images = ImageStore(self.connection)
        self.gallery = GalleryStore(self.connection)
        self.guilds = GuildSettingsStore(self.connection, "guild_settings", "guild_id")
        self.users = UserSettingsStore(self.connection, "user_settings", "user_id")
        self.moderation = ModerationStore(self.connection)
        self.pauses = PauseStore(self.connection)
        self.audit = AuditStore(self.connection)
        self.stats = StatsStore(self.connection)
        self.descriptions = DescriptionStore(self.connection)
        self.styles = StyleStore(self.connection)
        self.personal = PersonalStyleStore(self.connection)
        self.batches = BatchStore(self.connection)

    @classmethod
    async def open(cls, path: Path, *, busy_timeout_ms: int = BUSY_TIMEOUT_MS) -> Database:
        """busy_timeout_ms: how long a statement waits for another connection's write lock before it
        fails with "database is locked" (the job transitions then retry, see storage.retry)."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        await asyncio.to_thread(_prepare, path, busy_timeout_ms)
        conn = await aiosqlite.connect(path, isolation_level=None, timeout=busy_timeout_ms / 1000)
        try:
            conn.row_factory = aiosqlite.Row
            await conn.execute(f"PRAGMA busy_timeout={int(busy_timeout_ms)}")
            await conn.execute("PRAGMA foreign_keys=ON")
            # WAL + NORMAL is durable across process crashes; only an OS crash can lose the last commits.
            await conn.execute("PRAGMA synchronous=NORMAL")
        except BaseException:
            # aiosqlite's thread is not a daemon: an unclosed connection would keep the process alive.
            await conn.close()
            raise
        return cls(path, conn)

    async def close(self) -> None:
        await self.connection.conn.close()

    async def __aenter__(self) -> Database:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()
