"""Server styles (/style): one row per (guild, name), names unique per guild. The sample images are blob
keys (content hashes), referenced here so the blob sweep keeps their files while the style exists."""

from __future__ import annotations

import json
import sqlite3
import time
from dataclasses import dataclass

import aiosqlite

from storage.connection import Connection


class StyleTaken(Exception):
    """Another style of the guild already has that name."""


@dataclass(frozen=True)
class Style:
    id: int
    guild_id: int
    name: str
    user_id: int
    suffix: str
    lora: str | None
    lora_weight: float
    images: tuple[str, ...]
    source_job_id: int | None
    created_at: float


def _style(r: aiosqlite.Row) -> Style:
    return Style(id=r["id"], guild_id=r["guild_id"], name=r["name"], user_id=r["user_id"], suffix=r["suffix"],
                 lora=r["lora"], lora_weight=r["lora_weight"], images=tuple(json.loads(r["images"])),
                 source_job_id=r["source_job_id"], created_at=r["created_at"])


class StyleStore:
    def __init__(self, db: Connection) -> None:
        self._db = db

    async def add(self, guild_id: int, name: str, user_id: int, *, suffix: str = "", lora: str | None = None,
                  lora_weight: float = 1.0, images: list[str], source_job_id: int | None = None) -> Style:
        """Raises StyleTaken when the guild has a style of that name (the UNIQUE index decides, so two
        members saving the same name at once cannot both win)."""
        try:
            _, row_id = await self._db.write(
                """INSERT INTO styles (guild_id, name, user_id, suffix, lora, lora_weight, images,
                                       source_job_id, created_at)
                   VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)""",
                (guild_id, name, user_id, suffix, lora, lora_weight, json.dumps(images), source_job_id,
                 time.time()),
            )
        except sqlite3.IntegrityError:
            raise StyleTaken(name) from None
        found = await self.get(guild_id, name)
        assert found is not None and found.id == row_id
        return found

    async def get(self, guild_id: int, name: str) -> Style | None:
        row = await self._db.fetchone("SELECT * FROM styles WHERE guild_id = ? AND name = ?",
                                      (guild_id, name))
        return None if row is None else _style(row)

    async def list(self, guild_id: int, *, prefix: str = "", limit: int = 100) -> list[Style]:
        """By name; `prefix` narrows (autocomplete)."""
        escaped = prefix.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
        rows = await self._db.fetchall(
            "SELECT * FROM styles WHERE guild_id = ? AND name LIKE ? ESCAPE '\\' ORDER BY name LIMIT ?",
            (guild_id, f"{escaped}%", limit))
        return [_style(r) for r in rows]

    async def count(self, guild_id: int) -> int:
        row = await self._db.fetchone("SELECT count(*) FROM styles WHERE guild_id = ?", (guild_id,))
        return 0 if row is None else int(row[0])

    async def remove(self, guild_id: int, name: str) -> bool:
        """Removing a style that is gone is harmless (False)."""
        changed, _ = await self._db.write("DELETE FROM styles WHERE guild_id = ? AND name = ?",
                                          (guild_id, name))
        return changed > 0
