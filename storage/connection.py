"""One shared aiosqlite connection and the lock that keeps a coroutine's transaction whole.

Its own module so every store can import it without importing the Database that builds the stores."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterable
from contextlib import asynccontextmanager
from typing import Any

import aiosqlite


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
