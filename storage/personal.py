"""Personal styles (`--p`): the versions learnt from a member's starred jobs, and the member's reset time.
Versions are append-only: `--p v2` must mean the same style next year."""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from typing import Any

from storage.connection import Connection


@dataclass(frozen=True)
class PersonalStyle:
    user_id: int
    version: int
    suffix: str
    lora: str | None
    lora_weight: float
    liked_jobs: int
    created_at: float
    # The starred images as `--sref` names (`42.3`: image 3 of job 42), newest star first.
    images: tuple[str, ...] = ()


def _style(r: Any) -> PersonalStyle:
    return PersonalStyle(user_id=r["user_id"], version=r["version"], suffix=r["suffix"], lora=r["lora"],
                         lora_weight=r["lora_weight"], liked_jobs=r["liked_jobs"], created_at=r["created_at"],
                         images=tuple(str(i) for i in json.loads(r["images"] or "[]")))


class PersonalStyleStore:
    def __init__(self, db: Connection) -> None:
        self._db = db

    async def liked(self, user_id: int, since: float = 0.0) -> list[tuple[str, list[tuple[str, float]]]]:
        """(prompt, loras) of each job with an image `user_id` starred after `since` (not deleted), once per
        job, oldest star first."""
        rows = await self._db.fetchall(
            """SELECT j.request, min(f.created_at) AS first FROM favourites f
               JOIN images i ON i.id = f.image_id JOIN jobs j ON j.id = i.job_id
               WHERE f.user_id = ? AND f.created_at > ? AND i.deleted = 0
               GROUP BY j.id ORDER BY first, j.id""",
            (user_id, since),
        )
        out = []
        for row in rows:
            request = json.loads(row["request"])
            out.append((str(request.get("prompt", "")),
                        [(str(n), float(w)) for n, w in request.get("loras", [])]))
        return out

    async def liked_images(self, user_id: int, since: float, limit: int) -> list[str]:
        """The `limit` images `user_id` starred most recently after `since` (not deleted), newest first, as
        `--sref` names (`job.image`, the image counted from 1)."""
        rows = await self._db.fetchall(
            """SELECT i.job_id, i.idx FROM favourites f JOIN images i ON i.id = f.image_id
               WHERE f.user_id = ? AND f.created_at > ? AND i.deleted = 0
               ORDER BY f.created_at DESC, i.id DESC LIMIT ?""",
            (user_id, since, limit),
        )
        return [f"{row['job_id']}.{row['idx'] + 1}" for row in rows]

    async def latest(self, user_id: int) -> PersonalStyle | None:
        row = await self._db.fetchone(
            "SELECT * FROM personal_styles WHERE user_id = ? ORDER BY version DESC LIMIT 1", (user_id,))
        return None if row is None else _style(row)

    async def get(self, user_id: int, version: int) -> PersonalStyle | None:
        row = await self._db.fetchone("SELECT * FROM personal_styles WHERE user_id = ? AND version = ?",
                                      (user_id, version))
        return None if row is None else _style(row)

    async def add(self, user_id: int, suffix: str, lora: str | None, lora_weight: float,
                  liked_jobs: int, images: tuple[str, ...] = ()) -> PersonalStyle:
        """A new version, numbered after the newest in the same transaction (two at once cannot collide)."""
        async with self._db.transaction() as conn:
            async with conn.execute(
                    "SELECT coalesce(max(version), 0) + 1 FROM personal_styles WHERE user_id = ?", (user_id,)
            ) as cur:
                row = await cur.fetchone()
            version = int(row[0]) if row else 1
            await conn.execute(
                """INSERT INTO personal_styles (user_id, version, suffix, lora, lora_weight, liked_jobs,
                                                created_at, images) VALUES (?, ?, ?, ?, ?, ?, ?, ?)""",
                (user_id, version, suffix, lora, lora_weight, liked_jobs, time.time(), json.dumps(images)))
        found = await self.get(user_id, version)
        assert found is not None
        return found

    async def reset_at(self, user_id: int) -> float:
        row = await self._db.fetchone("SELECT reset_at FROM personal_style_resets WHERE user_id = ?",
                                      (user_id,))
        return 0.0 if row is None else float(row[0])

    async def reset(self, user_id: int) -> float:
        """From now on only new stars count; the versions stay. Returns the reset time."""
        now = time.time()
        await self._db.write(
            """INSERT INTO personal_style_resets (user_id, reset_at) VALUES (?, ?)
               ON CONFLICT (user_id) DO UPDATE SET reset_at = excluded.reset_at""", (user_id, now))
        return now
