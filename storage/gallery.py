"""Gallery queries: a user's images in a guild, newest first, keyset-paginated; prompt search.

Every query names its guild (0 for DMs), so one guild never sees another's images.
"""

from __future__ import annotations

import re
from typing import Any

from storage.db import Connection
from storage.images import ImageRow, image_from_row

_WORD = re.compile(r"\w+", re.UNICODE)
MAX_PAGE = 100


def _owner_token(guild_id: int | None, user_id: int | None) -> str:
    g = guild_id or 0
    return f"g{g}" if user_id is None else f"o{g}x{user_id}"


def fts_query(text: str, guild_id: int | None, user_id: int | None) -> str | None:
    """User text -> an FTS5 expression. Words only, each quoted, so no input can inject syntax.
    The last word matches as a prefix ("ligh" finds "lighthouse") for search-as-you-type."""
    words = [w.lower() for w in _WORD.findall(text)][:16]
    if not words:
        return None
    terms = [f'prompt:"{w}"' for w in words]
    terms[-1] += "*"
    return f"owner:{_owner_token(guild_id, user_id)} AND " + " AND ".join(terms)


class GalleryStore:
    def __init__(self, db: Connection) -> None:
        self._db = db

    async def page(
        self,
        guild_id: int | None,
        user_id: int,
        *,
        limit: int = 24,
        before_id: int | None = None,
        favourites: bool = False,
    ) -> list[ImageRow]:
        """Newest first. Pass the last row's id as `before_id` for the next page."""
        sql = "SELECT * FROM images WHERE guild_id = ? AND user_id = ? AND deleted = 0"
        params: list[Any] = [guild_id or 0, user_id]
        if favourites:
            sql += " AND favourite = 1"
        if before_id is not None:
            sql += " AND id < ?"
            params.append(before_id)
        params.append(max(1, min(limit, MAX_PAGE)))
        rows = await self._db.fetchall(sql + " ORDER BY id DESC LIMIT ?", params)
        return [image_from_row(r) for r in rows]

    async def count(self, guild_id: int | None, user_id: int, *, favourites: bool = False) -> int:
        sql = "SELECT count(*) FROM images WHERE guild_id = ? AND user_id = ? AND deleted = 0"
        if favourites:
            sql += " AND favourite = 1"
        row = await self._db.fetchone(sql, (guild_id or 0, user_id))
        return 0 if row is None else int(row[0])

    async def search(
        self,
        guild_id: int | None,
        user_id: int | None,
        text: str,
        *,
        limit: int = 24,
        before_id: int | None = None,
    ) -> list[ImageRow]:
        """Images whose prompt holds every word of `text`, newest first; user_id=None searches the
        whole guild (moderators)."""
        expr = fts_query(text, guild_id, user_id)
        if expr is None:
            return []
        inner = "SELECT rowid FROM images_fts WHERE images_fts MATCH ?"
        params: list[Any] = [expr]
        if before_id is not None:
            inner += " AND rowid < ?"
            params.append(before_id)
        inner += " ORDER BY rowid DESC LIMIT ?"
        params.append(max(1, min(limit, MAX_PAGE)))
        rows = await self._db.fetchall(
            f"SELECT * FROM images WHERE id IN ({inner}) AND deleted = 0 ORDER BY id DESC", params
        )
        return [image_from_row(r) for r in rows]
