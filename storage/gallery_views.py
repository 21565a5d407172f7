"""Gallery queries that respect privacy: what one member may see of another member's images.

Added beside storage/gallery.py (which pages a user's own images) for /gallery and /export: a viewer
sees someone else's image only if it was made publicly (the job was not private) in the same guild.
Pages are numbered (offset) because a contact sheet shows "page 3 of 7"; galleries are small enough
per member that an offset costs nothing noticeable.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from storage.db import Connection
from storage.gallery import fts_query
from storage.images import ImageRow, image_from_row

MAX_PAGE = 100


@dataclass(frozen=True)
class GalleryFilter:
    guild_id: int | None
    owner_id: int
    public_only: bool  # True unless the viewer is the owner
    favourites: bool = False
    search: str = ""
    # With a viewer, "favourites" means the images the viewer starred: in their own gallery, from
    # any member (what they may see); in another member's, that member's images they starred.
    # Without one, the owner's own stars.
    viewer_id: int | None = None


@dataclass(frozen=True)
class ExportRow:
    job_id: int
    index: int
    seed: int
    prompt: str
    negative: str
    model: str
    steps: int | None
    guidance: float | None
    sampler: str
    width: int
    height: int
    kind: str
    created_at: float


class GalleryViews:
    def __init__(self, db: Connection) -> None:
        self._db = db

    @staticmethod
    def _where(f: GalleryFilter) -> tuple[str, list[Any]] | None:
        sql = (" FROM images JOIN jobs ON jobs.id = images.job_id"
               " WHERE images.guild_id = ? AND images.deleted = 0")
        params: list[Any] = [f.guild_id or 0]
        anyone = f.favourites and f.viewer_id is not None and f.owner_id == f.viewer_id
        if f.favourites and f.viewer_id is not None:
            sql += " AND images.id IN (SELECT image_id FROM favourites WHERE user_id = ?)"
            params.append(f.viewer_id)
            if anyone:  # my favourites: mine, or public ones of anyone
                sql += " AND (images.user_id = ? OR jobs.private = 0)"
                params.append(f.viewer_id)
            else:
                sql += " AND images.user_id = ? AND jobs.private = 0"
                params.append(f.owner_id)
        else:
            sql += " AND images.user_id = ?"
            params.append(f.owner_id)
            if f.public_only:
                sql += " AND jobs.private = 0"
            if f.favourites:
                sql += " AND images.favourite = 1"
        if f.search.strip():
            expr = fts_query(f.search, f.guild_id, None if anyone else f.owner_id)
            if expr is None:
                return None
            sql += " AND images.id IN (SELECT rowid FROM images_fts WHERE images_fts MATCH ?)"
            params.append(expr)
        return sql, params

    async def page(self, f: GalleryFilter, *, offset: int = 0, limit: int = 9) -> list[ImageRow]:
        """Newest first."""
        where = self._where(f)
        if where is None:
            return []
        sql, params = where
        rows = await self._db.fetchall(
            f"SELECT images.*{sql} ORDER BY images.id DESC LIMIT ? OFFSET ?",
            [*params, max(1, min(limit, MAX_PAGE)), max(0, offset)],
        )
        return [image_from_row(r) for r in rows]

    async def count(self, f: GalleryFilter) -> int:
        where = self._where(f)
        if where is None:
            return 0
        sql, params = where
        row = await self._db.fetchone(f"SELECT count(*){sql}", params)
        return 0 if row is None else int(row[0])

    async def visible(self, image_id: int, guild_id: int | None, viewer_id: int) -> ImageRow | None:
        """The image if `viewer_id` may see it in this guild: their own, or made publicly here."""
        row = await self._db.fetchone(
            """SELECT images.* FROM images JOIN jobs ON jobs.id = images.job_id
               WHERE images.id = ? AND images.guild_id = ? AND images.deleted = 0
                 AND (images.user_id = ? OR jobs.private = 0)""",
            (image_id, guild_id or 0, viewer_id),
        )
        return None if row is None else image_from_row(row)

    async def export(self, guild_id: int | None, user_id: int) -> list[ExportRow]:
        """Every image the user made in this guild (not deleted), oldest first, with its parameters."""
        rows = await self._db.fetchall(
            """SELECT images.job_id, images.idx, images.seed, images.width, images.height,
                      images.created_at, jobs.request, jobs.kind
               FROM images JOIN jobs ON jobs.id = images.job_id
               WHERE images.guild_id = ? AND images.user_id = ? AND images.deleted = 0
               ORDER BY images.id""",
            (guild_id or 0, user_id),
        )
        out = []
        for r in rows:
            request = json.loads(r["request"])
            out.append(ExportRow(
                job_id=r["job_id"], index=r["idx"], seed=r["seed"], prompt=str(request.get("prompt", "")),
                negative=str(request.get("negative", "")), model=str(request.get("model", "")),
                steps=request.get("steps"), guidance=request.get("guidance"),
                sampler=str(request.get("sampler", "")), width=r["width"], height=r["height"],
                kind=r["kind"], created_at=r["created_at"],
            ))
        return out
