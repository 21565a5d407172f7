"""Expansions waiting for confirmation: a prompt like `{red, blue, green} bird --repeat 3` makes many jobs,
and above a few the bot asks first. The validated requests wait here (plain JSON, as storage keeps every
request) until the author confirms or cancels; either settles the row once."""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from typing import Any, Literal

from storage.connection import Connection

Outcome = Literal["confirmed", "cancelled"]


@dataclass(frozen=True)
class PendingBatch:
    id: int
    user_id: int
    guild_id: int | None
    channel_id: int | None
    requests: list[dict[str, Any]]
    created_at: float
    settled_at: float | None
    outcome: Outcome | None


class BatchStore:
    def __init__(self, db: Connection) -> None:
        self._db = db

    async def create(self, *, user_id: int, guild_id: int | None, channel_id: int | None,
                     requests: list[dict[str, Any]]) -> int:
        _, row_id = await self._db.write(
            """INSERT INTO pending_batches (user_id, guild_id, channel_id, requests, created_at)
               VALUES (?, ?, ?, ?, ?)""",
            (user_id, guild_id, channel_id, json.dumps(requests, separators=(",", ":")), time.time()),
        )
        assert row_id is not None
        return row_id

    async def get(self, batch_id: int) -> PendingBatch | None:
        row = await self._db.fetchone("SELECT * FROM pending_batches WHERE id = ?", (batch_id,))
        if row is None:
            return None
        data = dict(row)
        data["requests"] = json.loads(data["requests"])
        return PendingBatch(**data)

    async def settle(self, batch_id: int, outcome: Outcome) -> bool:
        """Mark the batch confirmed or cancelled. True only for the one call that settled it, so two
        clicks racing on Confirm queue the jobs once."""
        count, _ = await self._db.write(
            "UPDATE pending_batches SET settled_at = ?, outcome = ? WHERE id = ? AND settled_at IS NULL",
            (time.time(), outcome, batch_id),
        )
        return count == 1
