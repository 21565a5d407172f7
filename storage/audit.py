"""The audit log: who did what to whom, per guild. Append only."""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from typing import Any

from storage.connection import Connection


@dataclass(frozen=True)
class AuditEntry:
    id: int
    guild_id: int | None
    actor_id: int | None
    action: str
    target: str | None
    details: dict[str, Any]
    created_at: float


class AuditStore:
    def __init__(self, db: Connection) -> None:
        self._db = db

    async def record(
        self,
        guild_id: int | None,
        actor_id: int | None,
        action: str,
        target: str | None = None,
        details: dict[str, Any] | None = None,
        *,
        detail: str | None = None,
    ) -> int:
        """`detail` is a one-line note, kept as details["detail"]."""
        if detail:
            details = {**(details or {}), "detail": detail}
        _, row_id = await self._db.write(
            """INSERT INTO audit_log (guild_id, actor_id, action, target, details, created_at)
               VALUES (?, ?, ?, ?, ?, ?)""",
            (guild_id, actor_id, action, target, json.dumps(details or {}, default=str), time.time()),
        )
        assert row_id is not None
        return row_id

    async def count_recent(self, guild_id: int | None, actor_id: int, action: str,
                           since: float) -> tuple[int, float | None]:
        """How many `action` entries `actor_id` has in the guild since `since`, and when the newest was."""
        row = await self._db.fetchone(
            """SELECT count(*), max(created_at) FROM audit_log
               WHERE actor_id = ? AND action = ? AND created_at > ? AND guild_id IS ?""",
            (actor_id, action, since, guild_id),
        )
        return (0, None) if row is None else (int(row[0]), row[1])

    async def list(
        self, guild_id: int | None, *, limit: int = 25, before_id: int | None = None
    ) -> list[AuditEntry]:
        """Newest first, keyset-paginated."""
        sql = "SELECT * FROM audit_log WHERE guild_id IS ?"
        params: list[Any] = [guild_id]
        if before_id is not None:
            sql += " AND id < ?"
            params.append(before_id)
        params.append(limit)
        rows = await self._db.fetchall(sql + " ORDER BY id DESC LIMIT ?", params)
        return [
            AuditEntry(
                id=r["id"],
                guild_id=r["guild_id"],
                actor_id=r["actor_id"],
                action=r["action"],
                target=r["target"],
                details=json.loads(r["details"]),
                created_at=r["created_at"],
            )
            for r in rows
        ]
