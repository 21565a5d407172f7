"""Image rows: one per rendered image, pointing at a blob."""

from __future__ import annotations

from dataclasses import dataclass

import aiosqlite

from storage.db import Connection


@dataclass(frozen=True)
class NewImage:
    """What the worker hands over for a finished render."""

    index: int
    seed: int
    blob: str
    width: int
    height: int
    nsfw: bool = False


@dataclass
class ImageRow:
    id: int
    job_id: int
    index: int
    seed: int
    blob: str
    width: int
    height: int
    nsfw: bool
    favourite: bool
    deleted: bool
    created_at: float
    guild_id: int | None = None
    user_id: int | None = None
    prompt: str = ""


def image_from_row(row: aiosqlite.Row) -> ImageRow:
    return ImageRow(
        id=row["id"],
        job_id=row["job_id"],
        index=row["idx"],
        seed=row["seed"],
        blob=row["blob"],
        width=row["width"],
        height=row["height"],
        nsfw=bool(row["nsfw"]),
        favourite=bool(row["favourite"]),
        deleted=bool(row["deleted"]),
        created_at=row["created_at"],
        guild_id=row["guild_id"] or None,
        user_id=row["user_id"],
        prompt=row["prompt"],
    )


class ImageStore:
    def __init__(self, db: Connection) -> None:
        self._db = db

    async def for_job(self, job_id: int, *, include_deleted: bool = False) -> list[ImageRow]:
        sql = "SELECT * FROM images WHERE job_id = ?"
        if not include_deleted:
            sql += " AND deleted = 0"
        return [image_from_row(r) for r in await self._db.fetchall(sql + " ORDER BY idx", (job_id,))]

    async def get(self, image_id: int) -> ImageRow | None:
        row = await self._db.fetchone("SELECT * FROM images WHERE id = ?", (image_id,))
        return None if row is None else image_from_row(row)

    async def get_by_index(self, job_id: int, index: int) -> ImageRow | None:
        row = await self._db.fetchone("SELECT * FROM images WHERE job_id = ? AND idx = ?", (job_id, index))
        return None if row is None else image_from_row(row)

    async def set_favourite(self, image_id: int, favourite: bool) -> bool:
        count, _ = await self._db.write(
            "UPDATE images SET favourite = ? WHERE id = ? AND deleted = 0", (int(favourite), image_id)
        )
        return count == 1

    async def set_nsfw(self, image_id: int, nsfw: bool) -> bool:
        count, _ = await self._db.write("UPDATE images SET nsfw = ? WHERE id = ?", (int(nsfw), image_id))
        return count == 1

    async def set_deleted(self, image_id: int, deleted: bool = True) -> bool:
        """Soft delete: the row leaves galleries and search; the blob may still be shared."""
        count, _ = await self._db.write(
            "UPDATE images SET deleted = ? WHERE id = ? AND deleted != ?",
            (int(deleted), image_id, int(deleted)),
        )
        return count == 1

    async def set_deleted_for_job(self, job_id: int, deleted: bool = True) -> int:
        """(Un)delete every image of a job; returns how many changed."""
        count, _ = await self._db.write(
            "UPDATE images SET deleted = ? WHERE job_id = ? AND deleted != ?",
            (int(deleted), job_id, int(deleted)),
        )
        return count

    async def delete_job_images(self, job_id: int) -> int:
        """Soft-delete every image of a job (same as set_deleted_for_job(job_id, True))."""
        return await self.set_deleted_for_job(job_id, True)
