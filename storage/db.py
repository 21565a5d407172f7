"""The one SQLite database: connection set-up, migrations and the stores that share it."""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import AsyncIterator, Iterable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import aiosqlite

from storage.migrations import migrate

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


class Connection:
    """An aiosqlite connection plus the lock that keeps one coroutine's transaction whole.

    All coroutines share one connection, so a write issued while another coroutine's
    transaction is open would silently become part of it: every write takes the lock.
    """

    def __init__(self, conn: aiosqlite.Connection) -> None:
        self.conn = conn
        self._lock = asyncio.Lock()

    @asynccontextmanager
    async def transaction(self) -> AsyncIterator[aiosqlite.Connection]:
        async with self._lock:
            await self.conn.execute("BEGIN IMMEDIATE")
            try:
                yield self.conn
                await self.conn.execute("COMMIT")
            except BaseException:
                # Also when COMMIT itself failed (locked, disk full): a transaction left open would turn
                # every later BEGIN into an error, and the caller's retry could never succeed.
                if self.conn.in_transaction:
                    await self.conn.execute("ROLLBACK")
                raise

    async def write(self, sql: str, params: Iterable[Any] = ()) -> tuple[int, int | None]:
        """One statement on its own; returns (rowcount, lastrowid)."""
        async with self._lock:
            cur = await self.conn.execute(sql, tuple(params))
            result = (cur.rowcount, cur.lastrowid)
            await cur.close()
            return result

    # One trip to the database thread per read (execute + fetch + close would be three).
    async def fetchone(self, sql: str, params: Iterable[Any] = ()) -> aiosqlite.Row | None:
        rows = list(await self.conn.execute_fetchall(sql, tuple(params)))
        return rows[0] if rows else None

    async def fetchall(self, sql: str, params: Iterable[Any] = ()) -> list[aiosqlite.Row]:
        return list(await self.conn.execute_fetchall(sql, tuple(params)))


class Database:
    """Open with `await Database.open(path)`; the stores hang off it as attributes."""

    def __init__(self, path: Path, conn: aiosqlite.Connection) -> None:
        from storage.audit import AuditStore
        from storage.gallery import GalleryStore
        from storage.images import ImageStore
        from storage.jobs import JobStore
        from storage.moderation import ModerationStore
        from storage.settings import GuildSettingsStore, UserSettingsStore
        from storage.stats import StatsStore

        self.path = path
        self.connection = Connection(conn)
        self.jobs = JobStore(self.connection)
        self.images = ImageStore(self.connection)
        self.gallery = GalleryStore(self.connection)
        self.guilds = GuildSettingsStore(self.connection, "guild_settings", "guild_id")
        self.users = UserSettingsStore(self.connection, "user_settings", "user_id")
        self.moderation = ModerationStore(self.connection)
        self.audit = AuditStore(self.connection)
        self.stats = StatsStore(self.connection)

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
