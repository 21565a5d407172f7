"""Banned words and user bans, per guild."""

from __future__ import annotations

import time
from dataclasses import dataclass

from storage.connection import Connection


@dataclass(frozen=True)
class Ban:
    guild_id: int
    user_id: int
    reason: str
    banned_by: int | None
    created_at: float
    expires_at: float | None


class ModerationStore:
    def __init__(self, db: Connection) -> None:
        self._db = db

    async def add_banned_word(self, guild_id: int, word: str, *, added_by: int | None = None) -> bool:
        """False when the word was already banned. Words are kept lower-cased and trimmed."""
        word = word.strip().lower()
        if not word:
            raise ValueError("a banned word cannot be empty")
        count, _ = await self._db.write(
            "INSERT OR IGNORE INTO banned_words (guild_id, word, added_by, created_at) VALUES (?, ?, ?, ?)",
            (guild_id, word, added_by, time.time()),
        )
        return count == 1

    async def remove_banned_word(self, guild_id: int, word: str) -> bool:
        count, _ = await self._db.write(
            "DELETE FROM banned_words WHERE guild_id = ? AND word = ?", (guild_id, word.strip().lower())
        )
        return count == 1

    async def banned_words(self, guild_id: int) -> list[str]:
        rows = await self._db.fetchall(
            "SELECT word FROM banned_words WHERE guild_id = ? ORDER BY word", (guild_id,)
        )
        return [r["word"] for r in rows]

    async def ban(
        self,
        guild_id: int,
        user_id: int,
        *,
        reason: str = "",
        banned_by: int | None = None,
        expires_at: float | None = None,
    ) -> None:
        await self._db.write(
            """INSERT INTO user_bans (guild_id, user_id, reason, banned_by, created_at, expires_at)
               VALUES (?, ?, ?, ?, ?, ?)
               ON CONFLICT (guild_id, user_id) DO UPDATE SET reason = excluded.reason,
                   banned_by = excluded.banned_by, created_at = excluded.created_at,
                   expires_at = excluded.expires_at""",
            (guild_id, user_id, reason, banned_by, time.time(), expires_at),
        )

    async def unban(self, guild_id: int, user_id: int) -> bool:
        count, _ = await self._db.write(
            "DELETE FROM user_bans WHERE guild_id = ? AND user_id = ?", (guild_id, user_id)
        )
        return count == 1

    async def get_ban(self, guild_id: int, user_id: int, *, now: float | None = None) -> Ban | None:
        """The ban in force, if any (an expired ban is ignored)."""
        now = time.time() if now is None else now
        row = await self._db.fetchone(
            """SELECT * FROM user_bans WHERE guild_id = ? AND user_id = ?
               AND (expires_at IS NULL OR expires_at > ?)""",
            (guild_id, user_id, now),
        )
        return None if row is None else Ban(**dict(row))

    async def bans(self, guild_id: int) -> list[Ban]:
        rows = await self._db.fetchall(
            "SELECT * FROM user_bans WHERE guild_id = ? ORDER BY created_at", (guild_id,)
        )
        return [Ban(**dict(r)) for r in rows]
