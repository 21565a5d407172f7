"""Image rows: one per rendered image, pointing at a blob."""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass

import aiosqlite

from storage.connection import Connection


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
    # The job's private mode, copied onto the image (migration 5): what storage.access needs to decide.
    private: bool = False


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
        private=bool(row["private"]),
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

    async def with_blob(self, blob: str, limit: int = 50) -> list[ImageRow]:
        """The live images showing these bytes (a file is shared by every image that rendered them alike),
        newest first: who may fetch a file is decided from these rows."""
        rows = await self._db.fetchall(
            "SELECT * FROM images WHERE blob = ? AND deleted = 0 ORDER BY id DESC LIMIT ?", (blob, limit))
        return [image_from_row(r) for r in rows]

    async def children(self, job_id: int, index: int, limit: int = 24) -> list[ImageRow]:
        """The first images of jobs made from this image (U / V / zoom of it) or from its whole job
        (reroll), newest first (index jobs_parent)."""
        rows = await self._db.fetchall(
            """SELECT images.* FROM jobs JOIN images ON images.job_id = jobs.id
               WHERE jobs.parent_job_id = ? AND (jobs.parent_index = ? OR jobs.parent_index IS NULL)
                 AND images.deleted = 0
               ORDER BY images.id DESC LIMIT ?""", (job_id, index, limit))
        return [image_from_row(r) for r in rows]

    async def set_favourite(self, image_id: int, favourite: bool) -> bool:
        """The owner's own star on one of their images."""
        row = await self._db.fetchone("SELECT user_id FROM images WHERE id = ? AND deleted = 0", (image_id,))
        if row is None:
            return False
        await self.toggle_favourite(int(row["user_id"]), [image_id], favourite)
        return True

    async def toggle_favourite(self, user_id: int, image_ids: Sequence[int],
                               favourite: bool | None = None) -> bool:
        """Star the images for `user_id` (or unstar them; by default: unstar if all are starred already).
        Returns the new state. The owner's star is mirrored in images.favourite."""
        ids = list(dict.fromkeys(image_ids))
        if not ids:
            return False
        marks = ",".join("?" * len(ids))
        async with self._db.transaction() as conn:
            if favourite is None:
                async with conn.execute(
                    f"SELECT count(*) FROM favourites WHERE user_id = ? AND image_id IN ({marks})",
                    (user_id, *ids),
                ) as cur:
                    row = await cur.fetchone()
                favourite = (row[0] if row else 0) < len(ids)
            if favourite:
                await conn.execute(
                    f"""INSERT OR IGNORE INTO favourites (user_id, image_id, created_at)
                        SELECT ?, id, ? FROM images WHERE id IN ({marks}) AND deleted = 0""",
                    (user_id, time.time(), *ids),
                )
            else:
                await conn.execute(
                    f"DELETE FROM favourites WHERE user_id = ? AND image_id IN ({marks})", (user_id, *ids)
                )
            await conn.execute(
                f"UPDATE images SET favourite = ? WHERE user_id = ? AND id IN ({marks})",
                (int(favourite), user_id, *ids),
            )
        return favourite

    async def starred(self, user_id: int, image_ids: Sequence[int]) -> set[int]:
        """Which of these images `user_id` has starred."""
        ids = list(image_ids)
        if not ids:
            return set()
        rows = await self._db.fetchall(
            f"SELECT image_id FROM favourites WHERE user_id = ? AND image_id IN ({','.join('?' * len(ids))})",
            (user_id, *ids),
        )
        return {int(r[0]) for r in rows}

    async def set_nsfw(self, image_id: int, nsfw: bool) -> bool:
        count, _ = await self._db.write("UPDATE images SET nsfw = ? WHERE id = ?", (int(nsfw), image_id))
        return count == 1

    async def set_deleted(self, image_id: int, deleted: bool = True) -> bool:
        """Soft delete: the row leaves galleries and search; the blob may still be shared."""
        count, _ = await self._db.write(
            "UPDATE images SET deleted = ?, deleted_at = ? WHERE id = ? AND deleted != ?",
            (int(deleted), time.time() if deleted else None, image_id, int(deleted)),
        )
        return count == 1

    async def set_deleted_for_job(self, job_id: int, deleted: bool = True) -> int:
        """(Un)delete every image of a job; returns how many changed."""
        count, _ = await self._db.write(
            "UPDATE images SET deleted = ?, deleted_at = ? WHERE job_id = ? AND deleted != ?",
            (int(deleted), time.time() if deleted else None, job_id, int(deleted)),
        )
        return count

    async def delete_job_images(self, job_id: int) -> int:
        """Soft-delete every image of a job (same as set_deleted_for_job(job_id, True))."""
        return await self.set_deleted_for_job(job_id, True)

    async def referenced_blobs(self, deleted_before: float) -> set[str]:
        """Every blob key the database still needs: images not deleted (or deleted after
        `deleted_before`, still in their grace period), the grids of jobs that show such an image, and
        every job's source image and Vary (Region) mask (a queued job's upload is referenced by its request
        alone), reference
        images (--sref ..., which its variations and upscales use again) and every server style's sample
        images."""
        rows = await self._db.fetchall(
            """SELECT blob FROM images WHERE deleted = 0 OR deleted_at IS NULL OR deleted_at > ?
               UNION
               SELECT j.grid_blob FROM jobs j WHERE j.grid_blob IS NOT NULL AND EXISTS (
                   SELECT 1 FROM images i WHERE i.job_id = j.id
                   AND (i.deleted = 0 OR i.deleted_at IS NULL OR i.deleted_at > ?))
               UNION
               SELECT json_extract(request, '$.source') FROM jobs
               WHERE json_extract(request, '$.source') IS NOT NULL
               UNION
               SELECT json_extract(request, '$.mask') FROM jobs
               WHERE json_extract(request, '$.mask') IS NOT NULL
               UNION
               SELECT json_extract(ref.value, '$[1]')
               FROM jobs, json_each(jobs.request, '$.references') AS ref
               UNION
               SELECT value FROM styles, json_each(styles.images)""",
            (deleted_before, deleted_before),
        )
        return {str(r[0]) for r in rows}
