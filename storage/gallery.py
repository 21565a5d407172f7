"""The gallery store: contact sheets of a member's images, prompt search, favourites and export.

Privacy: a viewer sees someone else's image only if it was made publicly (the job was not private) in
the same guild; every query names its guild (0 for DMs), so guilds never see each other's images.

Built for 1 M images and members with 100 k of them: no sheet joins jobs (guild, owner, prompt, deleted
and the job's privacy are copied onto each image row, see migrations 1 and 5), each view pages over
its own index, and the total of a sheet ("page 3 of 7") comes from a counter table kept by triggers.
Sheets are numbered, but a page turn carries a cursor (the id at the edge of the page it came from)
so the next page is a keyset seek, not an OFFSET walk over every earlier image.
"""

from __future__ import annotations

import json
import re
from collections.abc import AsyncGenerator
from dataclasses import dataclass
from typing import Any

from storage.connection import Connection
from storage.images import ImageRow, image_from_row

_WORD = re.compile(r"\w+", re.UNICODE)
MAX_PAGE = 100
EXPORT_CHUNK = 500  # rows per trip to the database thread while exporting


def _owner_token(guild_id: int | None, user_id: int | None, public: bool = False) -> str:
    g = guild_id or 0
    return f"g{g}" if user_id is None else f"{'p' if public else 'o'}{g}x{user_id}"


def fts_query(text: str, guild_id: int | None, user_id: int | None, *, public: bool = False) -> str | None:
    """User text -> an FTS5 expression. Words only, each quoted, so no input can inject syntax.
    The last word matches as a prefix ("ligh" finds "lighthouse") for search-as-you-type.
    user_id=None searches the whole guild; public=True only the user's public images (migration 5)."""
    words = [w.lower() for w in _WORD.findall(text)][:16]
    if not words:
        return None
    terms = [f'prompt:"{w}"' for w in words]
    terms[-1] += "*"
    return f"owner:{_owner_token(guild_id, user_id, public)} AND " + " AND ".join(terms)


ASPECTS = ("square", "landscape", "portrait")


@dataclass(frozen=True)
class Facets:
    """Narrower views for the web gallery: the job's model and kind, the image's shape, a time window.
    Model and kind live on the job row: each candidate image probes its job by primary key."""

    model: str | None = None
    kind: str | None = None
    aspect: str | None = None  # one of ASPECTS
    since: float | None = None  # created_at >= since
    until: float | None = None  # created_at < until

    def conditions(self) -> tuple[list[str], list[Any]]:
        conds: list[str] = []
        params: list[Any] = []
        job: list[str] = []
        if self.model:
            job.append("json_extract(jobs.request, '$.model') = ?")
            params.append(self.model)
        if self.kind:
            job.append("jobs.kind = ?")
            params.append(self.kind)
        if job:
            conds.append(f"EXISTS (SELECT 1 FROM jobs WHERE jobs.id = images.job_id AND {' AND '.join(job)})")
        if self.aspect == "square":
            conds.append("images.width = images.height")
        elif self.aspect == "landscape":
            conds.append("images.width > images.height")
        elif self.aspect == "portrait":
            conds.append("images.width < images.height")
        if self.since is not None:
            conds.append("images.created_at >= ?")
            params.append(self.since)
        if self.until is not None:
            conds.append("images.created_at < ?")
            params.append(self.until)
        return conds, params


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
    facets: Facets | None = None

    @property
    def anyone(self) -> bool:
        """My favourites: images of any member of the guild that I starred."""
        return self.favourites and self.viewer_id is not None and self.owner_id == self.viewer_id


@dataclass(frozen=True)
class Sheet:
    """One page of a gallery: its rows, its (clamped) number and the totals to show beside it."""

    rows: list[ImageRow]
    page: int
    pages: int
    total: int


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


@dataclass(frozen=True)
class _View:
    source: str  # FROM
    where: str
    key: str  # the image id column the view is ordered by, newest first
    params: list[Any]
    count_sql: str
    count_params: list[Any]


class GalleryStore:
    def __init__(self, db: Connection) -> None:
        self._db = db

    @staticmethod
    def _query(f: GalleryFilter) -> _View | None:
        """How to read one view, or None when the search text holds no words. Each view is driven by
        an index that yields its rows newest first, so a page reads about one entry per image shown,
        and each count reads one index and no image rows: the owner's partial index on images
        (images_gallery, or images_public for another member's view; counted by gallery_counts), the
        viewer's stars by favourites_shown (privacy and deletion copied onto each star), a search by
        the FTS index (whose owner tokens say guild, owner and public)."""
        expr = None
        if f.search.strip():
            expr = fts_query(f.search, f.guild_id, None if f.anyone else f.owner_id,
                             public=f.public_only and not f.anyone)
            if expr is None:
                return None
        if f.favourites and f.viewer_id is not None:
            conds = ["favourites.user_id = ?", "favourites.guild_id = ?", "favourites.deleted = 0"]
            params: list[Any] = [f.viewer_id, f.guild_id or 0]
            if f.anyone:  # mine, or public ones of anyone
                conds.append("(favourites.owner_id = ? OR favourites.private = 0)")
                params.append(f.viewer_id)
            else:
                conds.append("favourites.owner_id = ? AND favourites.private = 0")
                params.append(f.owner_id)
            extra, extra_params = f.facets.conditions() if f.facets else ([], [])
            conds += extra
            params += extra_params
            if expr is not None:
                # A member's stars are few next to the prompts matching a word: the matches are read
                # from the index once, as a set of rowids, and probed for each star.
                conds.append("favourites.image_id IN"
                             " (SELECT rowid FROM images_fts WHERE images_fts MATCH ?)")
                params.append(expr)
            where = " AND ".join(conds)
            return _View("favourites CROSS JOIN images ON images.id = favourites.image_id", where,
                         "favourites.image_id", params,
                         f"SELECT count(*) FROM favourites WHERE {where}", params)
        conds = ["images.guild_id = ?", "images.user_id = ?", "images.deleted = 0"]
        params = [f.guild_id or 0, f.owner_id]
        if f.public_only:
            conds.append("images.private = 0")
        if f.favourites:  # no viewer: the owner's own stars
            conds.append("images.favourite = 1")
        extra, extra_params = f.facets.conditions() if f.facets else ([], [])
        conds += extra
        params += extra_params
        if expr is None:
            where = " AND ".join(conds)
            return _View("images", where, "images.id", params,
                         f"SELECT count(*) FROM images WHERE {where}", params)
        where = " AND ".join(["images_fts MATCH ?", *conds])
        # The owner's (public) token already says everything the join would check: the index alone
        # counts the matches (except the owner's own stars, which it does not hold).
        # CROSS JOIN keeps FTS the outer loop: it returns rowids newest first, so LIMIT stops early.
        source = "images_fts CROSS JOIN images ON images.id = images_fts.rowid"
        if f.favourites or extra:
            return _View(source, where, "images_fts.rowid", [expr, *params],
                         f"SELECT count(*) FROM {source} WHERE {where}", [expr, *params])
        return _View(source, where, "images_fts.rowid", [expr, *params],
                     "SELECT count(*) FROM images_fts WHERE images_fts MATCH ?", [expr])

    async def count(self, f: GalleryFilter) -> int:
        if not f.favourites and not f.search.strip() and not (f.facets and f.facets.conditions()[0]):
            row = await self._db.fetchone(
                f"SELECT {'public' if f.public_only else 'visible'} FROM gallery_counts"
                " WHERE guild_id = ? AND user_id = ?", (f.guild_id or 0, f.owner_id))
            return 0 if row is None else int(row[0])
        view = self._query(f)
        if view is None:
            return 0
        row = await self._db.fetchone(view.count_sql, view.count_params)
        return 0 if row is None else int(row[0])

    async def page(self, f: GalleryFilter, *, offset: int = 0, limit: int = 9, before: int | None = None,
                   after: int | None = None) -> list[ImageRow]:
        """Newest first. `before`: the rows just older than that id (the page after one that ended
        there); `after`: the rows just newer (the page before one that started there); otherwise by
        offset."""
        view = self._query(f)
        if view is None:
            return []
        sql, key, params = f"SELECT images.* FROM {view.source} WHERE {view.where}", view.key, view.params
        limit = max(1, min(limit, MAX_PAGE))
        if after is not None:
            rows = await self._db.fetchall(f"{sql} AND {key} > ? ORDER BY {key} LIMIT ?",
                                           [*params, after, limit])
            return [image_from_row(r) for r in reversed(rows)]
        if before is not None:
            sql += f" AND {key} < ?"
            params = [*params, before]
        rows = await self._db.fetchall(f"{sql} ORDER BY {key} DESC LIMIT ? OFFSET ?",
                                       [*params, limit, 0 if before is not None else max(0, offset)])
        return [image_from_row(r) for r in rows]

    async def sheet(self, f: GalleryFilter, page: int, *, per_page: int = 9, before: int | None = None,
                    after: int | None = None) -> Sheet:
        """What /gallery shows for one contact sheet: page `page` (clamped to the last one) and the totals.
        A cursor from the page the member came from makes it a seek; if images were added or removed
        since, so the seek does not fill the page it should, the page is read by offset instead."""
        total = await self.count(f)
        if total == 0:
            return Sheet([], 0, 0, 0)
        pages = (total + per_page - 1) // per_page
        wanted = max(0, min(page, pages - 1))
        if wanted == 0 or wanted != page:
            before = after = None  # the first page is always the newest; a clamped page has moved
        rows: list[ImageRow] = []
        if before is not None or after is not None:
            rows = await self.page(f, limit=per_page, before=before, after=after)
        if len(rows) < min(per_page, total - wanted * per_page):
            rows = await self.page(f, offset=wanted * per_page, limit=per_page)
        return Sheet(rows, wanted, pages, total)

    async def visible(self, image_id: int, guild_id: int | None, viewer_id: int) -> ImageRow | None:
        """The image if `viewer_id` may see it in this guild: their own, or made publicly here."""
        row = await self._db.fetchone(
            """SELECT * FROM images WHERE id = ? AND guild_id = ? AND deleted = 0
                 AND (user_id = ? OR private = 0)""",
            (image_id, guild_id or 0, viewer_id),
        )
        return None if row is None else image_from_row(row)

    async def export(self, guild_id: int | None, user_id: int) -> AsyncGenerator[list[ExportRow], None]:
        """The user's images in this guild (not deleted) with their parameters, newest first, in chunks
        of EXPORT_CHUNK (a keyset walk down the owner's index), so an export never holds every row at
        once and a caller with a cap stops reading at the cap."""
        before = None
        while True:
            rows = await self._db.fetchall(
                """SELECT images.id, images.job_id, images.idx, images.seed, images.width, images.height,
                          images.created_at, jobs.request, jobs.kind
                   FROM images JOIN jobs ON jobs.id = images.job_id
                   WHERE images.guild_id = ? AND images.user_id = ? AND images.deleted = 0
                     AND images.id < coalesce(?, 9223372036854775807)
                   ORDER BY images.id DESC LIMIT ?""",
                (guild_id or 0, user_id, before, EXPORT_CHUNK),
            )
            if not rows:
                return
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
            yield out
            if len(rows) < EXPORT_CHUNK:
                return
            before = int(rows[-1]["id"])
