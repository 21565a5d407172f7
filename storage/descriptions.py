"""/describe's prompt suggestions, one row per description: its buttons name the row, so they work after a
restart and for anyone who clicks them."""

from __future__ import annotations

import json
import time
from dataclasses import dataclass

from storage.connection import Connection


@dataclass(frozen=True)
class Description:
    id: int
    guild_id: int | None
    channel_id: int | None
    user_id: int
    prompts: tuple[str, ...]
    created_at: float


class DescriptionStore:
    def __init__(self, db: Connection) -> None:
        self._db = db

    async def add(self, guild_id: int | None, channel_id: int | None, user_id: int,
                  prompts: list[str]) -> int:
        _, row_id = await self._db.write(
            """INSERT INTO descriptions (guild_id, channel_id, user_id, prompts, created_at)
               VALUES (?, ?, ?, ?, ?)""",
            (guild_id, channel_id, user_id, json.dumps(prompts), time.time()),
        )
        assert row_id is not None
        return row_id

    async def get(self, description_id: int) -> Description | None:
        row = await self._db.fetchone("SELECT * FROM descriptions WHERE id = ?", (description_id,))
        if row is None:
            return None
        return Description(id=row["id"], guild_id=row["guild_id"], channel_id=row["channel_id"],
                           user_id=row["user_id"], prompts=tuple(json.loads(row["prompts"])),
                           created_at=row["created_at"])
