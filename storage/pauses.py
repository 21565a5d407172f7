"""Which guilds' queues their moderators paused: the scheduler's own state, kept apart from the guild
settings the bot writes, so neither side writes a key the other owns. A row per paused guild."""

from __future__ import annotations

import time

from storage.connection import Connection


class PauseStore:
    def __init__(self, db: Connection) -> None:
        self._db = db

    async def paused_guilds(self) -> list[int]:
        rows = await self._db.fetchall("SELECT guild_id FROM paused_queues ORDER BY guild_id")
        return [int(r["guild_id"]) for r in rows]

    async def pause(self, guild_id: int) -> None:
        """Pausing a paused guild again is harmless (it keeps its first time)."""
        await self._db.write(
            "INSERT INTO paused_queues (guild_id, paused_at) VALUES (?, ?) ON CONFLICT (guild_id) DO NOTHING",
            (guild_id, time.time()),
        )

    async def resume(self, guild_id: int) -> None:
        """Resuming a guild that is not paused is harmless."""
        await self._db.write("DELETE FROM paused_queues WHERE guild_id = ?", (guild_id,))
