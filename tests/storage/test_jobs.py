from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from storage import CapExceeded, Database, NewImage

REQUEST = {"prompt": "a red fox in snow", "seeds": [10, 11]}


@pytest.fixture
async def db(tmp_path: Path) -> AsyncIterator[Database]:
    database = await Database.open(tmp_path / "jobs.db")
    yield database
    await database.close()


async def _job(db: Database, user_id: int = 1, **kw: object) -> int:
    row = await db.jobs.create(user_id=user_id, kind="txt2img", request=REQUEST, batch_key="k", **kw)  # type: ignore[arg-type]
    return row.id


def _images(tag: str = "a") -> list[NewImage]:
    return [NewImage(i, 10 + i, (tag * 64)[:64] + ".png", 64, 64) for i in range(2)]


async def test_create_and_read_back(db: Database) -> None:
    job_id = await _job(db, user_id=7, guild_id=3, channel_id=4, priority=2.0, private=True)
    row = await db.jobs.get(job_id)
    assert row is not None
    assert (row.user_id, row.guild_id, row.channel_id, row.status, row.attempts) == (7, 3, 4, "queued", 0)
    assert row.request == REQUEST and row.private is True and row.priority == 2.0
    assert await db.jobs.get(job_id + 100) is None


async def test_caps_hold_under_concurrent_submits(db: Database) -> None:
    async def submit(user: int) -> str:
        try:
            await db.jobs.create(
                user_id=user,
                kind="txt2img",
                request=REQUEST,
                batch_key="k",
                max_queued_per_user=3,
                max_queued_total=10,
            )
            return "ok"
        except CapExceeded as exc:
            return exc.scope

    results = await asyncio.gather(*(submit(u % 5) for u in range(40)))
    assert results.count("ok") == 10
    active = await db.jobs.list_active()
    assert len(active) == 10
    per_user = {u: sum(1 for j in active if j.user_id == u) for u in range(5)}
    assert max(per_user.values()) <= 3


async def test_claim_complete_is_idempotent_and_delivery_happens_once(db: Database) -> None:
    job_id = await _job(db, guild_id=9)
    assert await db.jobs.claim([job_id], lease_owner="w", lease_seconds=60) == [job_id]
    assert await db.jobs.claim([job_id], lease_owner="w", lease_seconds=60) == []
    first, rows = await db.jobs.complete(job_id, _images("a"), render_seconds=1.5)
    again, rows2 = await db.jobs.complete(job_id, _images("b"), render_seconds=9.0)
    assert first and not again
    assert [r.blob for r in rows] == [r.blob for r in rows2] == ["a" * 64 + ".png"] * 2
    assert [r.seed for r in rows] == [10, 11]
    assert len(await db.images.for_job(job_id)) == 2
    job = await db.jobs.get(job_id)
    assert job is not None and job.status == "done" and job.render_seconds == 1.5

    assert [j.id for j in await db.jobs.list_undelivered()] == [job_id]
    results = await asyncio.gather(*(db.jobs.mark_delivered(job_id) for _ in range(5)))
    assert results.count(True) == 1
    assert await db.jobs.list_undelivered() == []


async def test_queued_job_cannot_be_marked_delivered(db: Database) -> None:
    job_id = await _job(db)
    assert not await db.jobs.mark_delivered(job_id)


async def test_cancel_and_fail_only_touch_active_jobs(db: Database) -> None:
    a, b = await _job(db), await _job(db)
    assert await db.jobs.cancel(a)
    assert not await db.jobs.cancel(a)
    assert await db.jobs.fail(b, "out of memory")
    assert not await db.jobs.fail(b, "again")
    rows = {j.id: j for j in await db.jobs.list_undelivered()}
    assert rows[a].status == "cancelled" and rows[b].status == "failed" and rows[b].error == "out of memory"


async def test_recover_counts_attempts_and_fails_after_three(db: Database) -> None:
    job_id = await _job(db)
    for attempt in range(1, 4):
        assert await db.jobs.claim([job_id], lease_owner=f"dead-{attempt}", lease_seconds=60) == [job_id]
        requeued, failed = await db.jobs.recover(lease_owner="me", max_attempts=3)
        if attempt < 3:
            assert (requeued, failed) == ([job_id], [])
        else:
            assert (requeued, failed) == ([], [job_id])
    row = await db.jobs.get(job_id)
    assert row is not None and row.status == "failed" and row.attempts == 3
    assert row.error is not None and "3 times" in row.error


async def test_clean_requeue_refunds_the_attempt(db: Database) -> None:
    job_id = await _job(db)
    await db.jobs.claim([job_id], lease_owner="w", lease_seconds=60)
    await db.jobs.requeue([job_id], refund_attempt=True)
    row = await db.jobs.get(job_id)
    assert row is not None and row.status == "queued" and row.attempts == 0


async def test_recover_leaves_own_leases_alone(db: Database) -> None:
    job_id = await _job(db)
    await db.jobs.claim([job_id], lease_owner="me", lease_seconds=60)
    assert await db.jobs.recover(lease_owner="me", max_attempts=3) == ([], [])


async def test_discord_refs_and_active_lists(db: Database) -> None:
    a = await _job(db, user_id=1, guild_id=5)
    b = await _job(db, user_id=2, guild_id=5)
    await _job(db, user_id=1, guild_id=6)
    await db.jobs.set_message_refs(a, interaction_token="tok", token_expires_at=123.0, message_id=77)
    await db.jobs.set_message_refs(a, channel_id=88)
    row = await db.jobs.get(a)
    assert row is not None
    assert (row.interaction_token, row.token_expires_at, row.message_id, row.channel_id) == (
        "tok",
        123.0,
        77,
        88,
    )
    assert [j.id for j in await db.jobs.list_active(guild_id=5)] == [a, b]
    assert len(await db.jobs.list_active(user_id=1)) == 2
    assert [j.id for j in await db.jobs.list_for_user(1, guild_id=5)] == [a]
