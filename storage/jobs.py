"""Jobs: the durable queue. The jobs table is the source of truth for the scheduler."""

from __future__ import annotations

import json
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Final, Literal

import aiosqlite

from storage.connection import Connection
from storage.errors import StorageError
from storage.images import ImageRow, NewImage, image_from_row

JobStatus = Literal["queued", "running", "done", "failed", "cancelled"]
ACTIVE: Final = ("queued", "running")
FINISHED: Final = ("done", "failed", "cancelled")
# The same set inside SQL, so a new final status is added in one place.
_FINISHED_SQL: Final = "(" + ", ".join(f"'{status}'" for status in FINISHED) + ")"


class CapExceeded(StorageError):
    """A queue cap was reached; `scope` is "user" or "total"."""

    def __init__(self, scope: Literal["user", "total"], limit: int) -> None:
        super().__init__(f"{scope} queue cap of {limit} reached")
        self.scope = scope
        self.limit = limit


@dataclass
class JobRow:
    id: int
    guild_id: int | None
    channel_id: int | None
    user_id: int
    kind: str
    parent_job_id: int | None
    parent_index: int | None
    request: dict[str, Any]
    status: JobStatus
    attempts: int
    error: str | None
    created_at: float
    started_at: float | None
    finished_at: float | None
    priority: float
    interaction_token: str | None
    token_expires_at: float | None
    message_id: int | None
    delivered_at: float | None
    private: bool
    batch_key: str = ""
    render_seconds: float | None = None
    lease_owner: str | None = None
    lease_expires_at: float | None = None
    grid_blob: str | None = None

    @property
    def finished(self) -> bool:
        return self.status in FINISHED


def job_from_row(row: aiosqlite.Row) -> JobRow:
    return JobRow(
        id=row["id"],
        guild_id=row["guild_id"],
        channel_id=row["channel_id"],
        user_id=row["user_id"],
        kind=row["kind"],
        parent_job_id=row["parent_job_id"],
        parent_index=row["parent_index"],
        request=json.loads(row["request"]),
        status=row["status"],
        attempts=row["attempts"],
        error=row["error"],
        created_at=row["created_at"],
        started_at=row["started_at"],
        finished_at=row["finished_at"],
        priority=row["priority"],
        interaction_token=row["interaction_token"],
        token_expires_at=row["token_expires_at"],
        message_id=row["message_id"],
        delivered_at=row["delivered_at"],
        private=bool(row["private"]),
        batch_key=row["batch_key"],
        render_seconds=row["render_seconds"],
        lease_owner=row["lease_owner"],
        lease_expires_at=row["lease_expires_at"],
        grid_blob=row["grid_blob"],
    )


class _Unset:
    pass


UNSET: Final = _Unset()


class JobStore:
    def __init__(self, db: Connection) -> None:
        self._db = db

    # -- creating -------------------------------------------------------------------------------

    async def create(
        self,
        *,
        user_id: int,
        kind: str,
        request: dict[str, Any],
        batch_key: str,
        guild_id: int | None = None,
        channel_id: int | None = None,
        parent_job_id: int | None = None,
        parent_index: int | None = None,
        priority: float = 1.0,
        private: bool = False,
        max_queued_per_user: int | None = None,
        max_queued_total: int | None = None,
    ) -> JobRow:
        """Insert a queued job. The caps are checked in the same transaction as the insert, so
        coroutines submitting at once can never overshoot them. Raises CapExceeded."""
        now = time.time()
        async with self._db.transaction() as conn:
            if max_queued_total is not None:
                async with conn.execute("SELECT count(*) FROM jobs WHERE status = 'queued'") as cur:
                    row = await cur.fetchone()
                if row is not None and row[0] >= max_queued_total:
                    raise CapExceeded("total", max_queued_total)
            if max_queued_per_user is not None:
                async with conn.execute(
                    "SELECT count(*) FROM jobs WHERE status = 'queued' AND user_id = ?", (user_id,)
                ) as cur:
                    row = await cur.fetchone()
                if row is not None and row[0] >= max_queued_per_user:
                    raise CapExceeded("user", max_queued_per_user)
            cur = await conn.execute(
                """INSERT INTO jobs (guild_id, channel_id, user_id, kind, parent_job_id, parent_index,
                       request, batch_key, priority, private, created_at)
                   VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) RETURNING *""",
                (
                    guild_id,
                    channel_id,
                    user_id,
                    kind,
                    parent_job_id,
                    parent_index,
                    json.dumps(request, separators=(",", ":")),
                    batch_key,
                    priority,
                    int(private),
                    now,
                ),
            )
            inserted = await cur.fetchone()
            await cur.close()
        assert inserted is not None
        return job_from_row(inserted)

    # -- reading --------------------------------------------------------------------------------

    async def get(self, job_id: int) -> JobRow | None:
        row = await self._db.fetchone("SELECT * FROM jobs WHERE id = ?", (job_id,))
        return None if row is None else job_from_row(row)

    async def list_active(self, user_id: int | None = None, guild_id: int | None = None) -> list[JobRow]:
        """Queued and running jobs, oldest first."""
        sql = "SELECT * FROM jobs WHERE status IN ('queued', 'running')"
        params: list[Any] = []
        if user_id is not None:
            sql += " AND user_id = ?"
            params.append(user_id)
        if guild_id is not None:
            sql += " AND guild_id = ?"
            params.append(guild_id)
        return [job_from_row(r) for r in await self._db.fetchall(sql + " ORDER BY id", params)]

    async def ancestors(self, job_id: int, *, limit: int = 20) -> list[JobRow]:
        """The jobs `job_id` was made from, its parent first, at most `limit` of them."""
        rows = await self._db.fetchall(
            """WITH RECURSIVE up(id, depth) AS (
                   SELECT parent_job_id, 1 FROM jobs WHERE id = ? AND parent_job_id IS NOT NULL
                   UNION ALL
                   SELECT jobs.parent_job_id, up.depth + 1 FROM jobs JOIN up ON jobs.id = up.id
                   WHERE jobs.parent_job_id IS NOT NULL AND up.depth < ?)
               SELECT jobs.* FROM up JOIN jobs ON jobs.id = up.id ORDER BY up.depth""",
            (job_id, limit),
        )
        return [job_from_row(r) for r in rows]

    async def descendants(self, job_id: int, *, max_depth: int = 10, limit: int = 200) -> list[JobRow]:
        """Every job made from `job_id`, from those made from them, and so on (`max_depth` generations,
        at most `limit` jobs), in id order; each row's parent_job_id places it in the tree."""
        rows = await self._db.fetchall(
            """WITH RECURSIVE down(id, depth) AS (
                   SELECT id, 1 FROM jobs WHERE parent_job_id = ?
                   UNION ALL
                   SELECT jobs.id, down.depth + 1 FROM jobs JOIN down ON jobs.parent_job_id = down.id
                   WHERE down.depth < ?)
               SELECT jobs.* FROM down JOIN jobs ON jobs.id = down.id ORDER BY jobs.id LIMIT ?""",
            (job_id, max_depth, limit),
        )
        return [job_from_row(r) for r in rows]

    async def list_undelivered(self) -> list[JobRow]:
        """Finished jobs whose result the bot has not yet delivered (e.g. it stopped mid-way)."""
        rows = await self._db.fetchall(
            f"""SELECT * FROM jobs WHERE delivered_at IS NULL AND status IN {_FINISHED_SQL}
               ORDER BY id"""
        )
        return [job_from_row(r) for r in rows]

    async def list_for_user(
        self, user_id: int, *, guild_id: int | None = None, limit: int = 25, before_id: int | None = None
    ) -> list[JobRow]:
        sql = "SELECT * FROM jobs WHERE user_id = ?"
        params: list[Any] = [user_id]
        if guild_id is not None:
            sql += " AND guild_id = ?"
            params.append(guild_id)
        if before_id is not None:
            sql += " AND id < ?"
            params.append(before_id)
        params.append(limit)
        return [job_from_row(r) for r in await self._db.fetchall(sql + " ORDER BY id DESC LIMIT ?", params)]

    async def recent_render_seconds(self, per_key: int = 20) -> dict[str, list[float]]:
        """Render seconds per image of the latest done jobs per batch key, oldest first (ETA seed)."""
        rows = await self._db.fetchall(
            """SELECT batch_key, secs FROM (
                   SELECT batch_key, render_seconds / max(1, json_array_length(request, '$.seeds')) AS secs,
                          row_number() OVER (PARTITION BY batch_key ORDER BY id DESC) AS rn
                   FROM jobs WHERE status = 'done' AND render_seconds IS NOT NULL)
               WHERE rn <= ? ORDER BY batch_key, rn DESC""",
            (per_key,),
        )
        out: dict[str, list[float]] = {}
        for r in rows:
            out.setdefault(r["batch_key"], []).append(float(r["secs"]))
        return out

    # -- message references and delivery --------------------------------------------------------

    async def set_message_refs(
        self,
        job_id: int,
        *,
        interaction_token: str | _Unset | None = UNSET,
        token_expires_at: float | _Unset | None = UNSET,
        message_id: int | _Unset | None = UNSET,
        channel_id: int | _Unset | None = UNSET,
    ) -> None:
        values = {
            "interaction_token": interaction_token,
            "token_expires_at": token_expires_at,
            "message_id": message_id,
            "channel_id": channel_id,
        }
        given = {k: v for k, v in values.items() if not isinstance(v, _Unset)}
        if not given:
            return
        sets = ", ".join(f"{k} = ?" for k in given)
        await self._db.write(f"UPDATE jobs SET {sets} WHERE id = ?", [*given.values(), job_id])

    async def mark_delivered(self, job_id: int) -> bool:
        """True only for the first caller: delivering twice (after a restart) is then harmless."""
        count, _ = await self._db.write(
            f"""UPDATE jobs SET delivered_at = ?
               WHERE id = ? AND delivered_at IS NULL AND status IN {_FINISHED_SQL}""",
            (time.time(), job_id),
        )
        return count == 1

    # -- the worker's transitions ---------------------------------------------------------------

    async def claim(self, job_ids: Sequence[int], *, lease_owner: str, lease_seconds: float) -> list[int]:
        """queued -> running for those still queued (a cancel may have won); counts an attempt."""
        now = time.time()
        claimed: list[int] = []
        async with self._db.transaction() as conn:
            for job_id in job_ids:
                cur = await conn.execute(
                    """UPDATE jobs SET status = 'running', attempts = attempts + 1, started_at = ?,
                           lease_owner = ?, lease_expires_at = ?
                       WHERE id = ? AND status = 'queued'""",
                    (now, lease_owner, now + lease_seconds, job_id),
                )
                if cur.rowcount == 1:
                    claimed.append(job_id)
                await cur.close()
        return claimed

    async def count_attempt(self, job_id: int, attempt: int) -> bool:
        """A running job's render started over elsewhere (its remote worker died): attempts becomes
        `attempt`, never less. Harmless to repeat: the same attempt changes nothing the second time."""
        count, _ = await self._db.write(
            "UPDATE jobs SET attempts = ? WHERE id = ? AND status = 'running' AND attempts < ?",
            (attempt, job_id, attempt),
        )
        return count == 1

    async def requeue(self, job_ids: Sequence[int], *, refund_attempt: bool) -> None:
        """running -> queued. A clean stop refunds the attempt: it was not the job's fault."""
        refund = 1 if refund_attempt else 0
        async with self._db.transaction() as conn:
            for job_id in job_ids:
                await conn.execute(
                    """UPDATE jobs SET status = 'queued', attempts = max(0, attempts - ?), started_at = NULL,
                           lease_owner = NULL, lease_expires_at = NULL
                       WHERE id = ? AND status = 'running'""",
                    (refund, job_id),
                )

    async def complete(
        self, job_id: int, images: Sequence[NewImage], *, render_seconds: float | None = None,
        grid_blob: str | None = None,
    ) -> tuple[bool, list[ImageRow]]:
        """Record the images and mark the job done, once. Returns (first time, the job's images):
        a job that ran twice (crash after render, before the mark) keeps its first images."""
        now = time.time()
        async with self._db.transaction() as conn:
            async with conn.execute(
                "SELECT status, guild_id, user_id, request, private FROM jobs WHERE id = ?", (job_id,)
            ) as cur:
                job = await cur.fetchone()
            if job is None:
                raise StorageError(f"job {job_id} does not exist")
            first = job["status"] in ACTIVE
            if first:
                prompt = str(json.loads(job["request"]).get("prompt", ""))
                await conn.executemany(
                    """INSERT OR IGNORE INTO images (job_id, idx, seed, blob, width, height, nsfw, created_at,
                           guild_id, user_id, prompt, private)
                       VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)""",
                    [
                        (
                            job_id,
                            im.index,
                            im.seed,
                            im.blob,
                            im.width,
                            im.height,
                            int(im.nsfw),
                            now,
                            job["guild_id"] or 0,
                            job["user_id"],
                            prompt,
                            int(job["private"] != 0),
                        )
                        for im in images
                    ],
                )
                await conn.execute(
                    """UPDATE jobs SET status = 'done', finished_at = ?, error = NULL, render_seconds = ?,
                           grid_blob = ?, lease_owner = NULL, lease_expires_at = NULL WHERE id = ?""",
                    (now, render_seconds, grid_blob, job_id),
                )
            async with conn.execute("SELECT * FROM images WHERE job_id = ? ORDER BY idx", (job_id,)) as cur:
                rows = [image_from_row(r) for r in await cur.fetchall()]
        return first, rows

    async def fail(self, job_id: int, reason: str) -> bool:
        return await self._finish(job_id, "failed", reason)

    async def cancel(self, job_id: int) -> bool:
        """Cancel a queued job at once. A running one is the worker's to stop (see finish_cancelled)."""
        count, _ = await self._db.write(
            "UPDATE jobs SET status = 'cancelled', finished_at = ? WHERE id = ? AND status = 'queued'",
            (time.time(), job_id),
        )
        return count == 1

    async def finish_cancelled(self, job_id: int) -> bool:
        """A running (or queued) job ends as cancelled."""
        return await self._finish(job_id, "cancelled", None)

    async def _finish(self, job_id: int, status: JobStatus, error: str | None) -> bool:
        count, _ = await self._db.write(
            """UPDATE jobs SET status = ?, error = ?, finished_at = ?, lease_owner = NULL,
                   lease_expires_at = NULL WHERE id = ? AND status IN ('queued', 'running')""",
            (status, error, time.time(), job_id),
        )
        return count == 1

    async def adopt_running(self, *, lease_owner: str, lease_seconds: float) -> list[JobRow]:
        """At start-up with remote workers: every running job is leased to `lease_owner` instead of being
        counted as abandoned, since a worker may still be rendering it; the caller checks each and requeues
        the lost ones. Harmless to repeat."""
        now = time.time()
        await self._db.write(
            "UPDATE jobs SET lease_owner = ?, lease_expires_at = ? WHERE status = 'running'",
            (lease_owner, now + lease_seconds),
        )
        rows = await self._db.fetchall("SELECT * FROM jobs WHERE status = 'running' ORDER BY id")
        return [job_from_row(r) for r in rows]

    async def recover(self, *, lease_owner: str, max_attempts: int) -> tuple[list[int], list[int]]:
        """At start-up: running jobs not leased by `lease_owner` were abandoned by a dead worker.
        Each counts as a failed attempt; after `max_attempts` the job fails with its reason.
        Returns (requeued ids, failed ids)."""
        now = time.time()
        async with self._db.transaction() as conn:
            async with conn.execute(
                """SELECT id, attempts, error FROM jobs WHERE status = 'running'
                   AND (lease_owner IS NULL OR lease_owner != ?) ORDER BY id""",
                (lease_owner,),
            ) as cur:
                abandoned = list(await cur.fetchall())
            requeued: list[int] = []
            failed: list[int] = []
            for row in abandoned:
                if row["attempts"] >= max_attempts:
                    reason = row["error"] or (
                        f"the renderer stopped during this job {row['attempts']} times; giving up"
                    )
                    await conn.execute(
                        """UPDATE jobs SET status = 'failed', error = ?, finished_at = ?, lease_owner = NULL,
                               lease_expires_at = NULL WHERE id = ?""",
                        (reason, now, row["id"]),
                    )
                    failed.append(row["id"])
                else:
                    await conn.execute(
                        """UPDATE jobs SET status = 'queued', started_at = NULL, lease_owner = NULL,
                               lease_expires_at = NULL WHERE id = ?""",
                        (row["id"],),
                    )
                    requeued.append(row["id"])
        return requeued, failed
