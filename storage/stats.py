"""Stats for moderators: jobs and images per day, render time, failure rate, top users."""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

from storage.connection import Connection

DAY = 86400.0


@dataclass(frozen=True)
class StatsSummary:
    jobs: int
    done: int
    failed: int
    cancelled: int
    images: int
    render_seconds: float

    @property
    def failure_rate(self) -> float:
        finished = self.done + self.failed
        return 0.0 if finished == 0 else self.failed / finished


class StatsStore:
    def __init__(self, db: Connection) -> None:
        self._db = db

    @staticmethod
    def _scope(guild_id: int | None, days: int, column: str = "created_at") -> tuple[str, list[Any]]:
        sql = f" WHERE {column} >= ?"
        params: list[Any] = [time.time() - days * DAY]
        if guild_id is not None:
            sql += " AND guild_id = ?"
            params.append(guild_id)
        return sql, params

    async def jobs_per_day(self, guild_id: int | None = None, *, days: int = 30) -> list[tuple[str, int]]:
        where, params = self._scope(guild_id, days)
        rows = await self._db.fetchall(
            f"""SELECT date(created_at, 'unixepoch') AS day, count(*) AS n FROM jobs{where}
                GROUP BY day ORDER BY day""",
            params,
        )
        return [(r["day"], r["n"]) for r in rows]

    async def images_per_day(self, guild_id: int | None = None, *, days: int = 30) -> list[tuple[str, int]]:
        where, params = self._scope(guild_id, days)
        rows = await self._db.fetchall(
            f"""SELECT date(created_at, 'unixepoch') AS day, count(*) AS n FROM images{where}
                GROUP BY day ORDER BY day""",
            params,
        )
        return [(r["day"], r["n"]) for r in rows]

    async def summary(self, guild_id: int | None = None, *, days: int = 30) -> StatsSummary:
        where, params = self._scope(guild_id, days)
        row = await self._db.fetchone(
            f"""SELECT count(*) AS jobs,
                       coalesce(sum(status = 'done'), 0) AS done,
                       coalesce(sum(status = 'failed'), 0) AS failed,
                       coalesce(sum(status = 'cancelled'), 0) AS cancelled,
                       coalesce(sum(render_seconds), 0.0) AS secs
                FROM jobs{where}""",
            params,
        )
        images = await self._db.fetchone(f"SELECT count(*) FROM images{where}", params)
        assert row is not None and images is not None
        return StatsSummary(
            jobs=row["jobs"],
            done=row["done"],
            failed=row["failed"],
            cancelled=row["cancelled"],
            images=images[0],
            render_seconds=float(row["secs"]),
        )

    async def top_users(
        self, guild_id: int | None = None, *, days: int = 30, limit: int = 10
    ) -> list[tuple[int, int]]:
        """(user_id, images) by images made, most first."""
        where, params = self._scope(guild_id, days)
        rows = await self._db.fetchall(
            f"""SELECT user_id, count(*) AS n FROM images{where} AND deleted = 0
                GROUP BY user_id ORDER BY n DESC, user_id LIMIT ?""",
            [*params, limit],
        )
        return [(r["user_id"], r["n"]) for r in rows]
