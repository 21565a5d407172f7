from __future__ import annotations

import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from storage import Database, NewImage


@pytest.fixture
async def db(tmp_path: Path) -> AsyncIterator[Database]:
    database = await Database.open(tmp_path / "misc.db")
    yield database
    await database.close()


async def test_guild_and_user_settings_merge_and_reset(db: Database) -> None:
    assert await db.guilds.get(1) == {}
    await db.guilds.update(1, {"max_steps": 40, "channels": [5, 6]})
    assert await db.guilds.update(1, {"nsfw": "blur", "max_steps": None}) == {
        "channels": [5, 6],
        "nsfw": "blur",
    }
    assert await db.guilds.get(2) == {}
    await db.users.update(9, {"aspect": "3:2", "steps": 30})
    assert await db.users.reset(9, ["steps"]) == {"aspect": "3:2"}
    assert await db.users.reset(9) == {}
    assert await db.users.get(9) == {}


async def test_banned_words_and_bans(db: Database) -> None:
    assert await db.moderation.add_banned_word(1, "  Gore ")
    assert not await db.moderation.add_banned_word(1, "gore")
    await db.moderation.add_banned_word(1, "blood")
    await db.moderation.add_banned_word(2, "other")
    assert await db.moderation.banned_words(1) == ["blood", "gore"]
    assert await db.moderation.remove_banned_word(1, "GORE")
    assert await db.moderation.banned_words(1) == ["blood"]
    with pytest.raises(ValueError):
        await db.moderation.add_banned_word(1, "  ")

    await db.moderation.ban(1, 42, reason="spam", banned_by=7)
    await db.moderation.ban(1, 43, reason="timeout", expires_at=time.time() - 1)
    ban = await db.moderation.get_ban(1, 42)
    assert ban is not None and ban.reason == "spam" and ban.banned_by == 7
    assert await db.moderation.get_ban(1, 43) is None  # expired
    assert await db.moderation.get_ban(2, 42) is None  # other guild
    assert [b.user_id for b in await db.moderation.bans(1)] == [42, 43]
    assert await db.moderation.unban(1, 42)
    assert await db.moderation.get_ban(1, 42) is None


async def test_audit_log_newest_first_per_guild(db: Database) -> None:
    for i in range(5):
        await db.audit.record(1, 7, "ban", target=f"user:{i}", details={"reason": "spam"})
    await db.audit.record(2, 7, "pause")
    await db.audit.record(guild_id=1, actor_id=8, action="delete", target="job:3", detail="owner request")
    entries = await db.audit.list(1, limit=3)
    assert [e.action for e in entries] == ["delete", "ban", "ban"]
    assert entries[0].details == {"detail": "owner request"}
    more = await db.audit.list(1, limit=10, before_id=entries[-1].id)
    assert [e.target for e in more] == ["user:2", "user:1", "user:0"]
    assert [e.action for e in await db.audit.list(2)] == ["pause"]


async def test_stats(db: Database) -> None:
    async def job(user: int, status: str, images: int = 2, secs: float = 3.0) -> None:
        row = await db.jobs.create(
            user_id=user,
            guild_id=1,
            kind="txt2img",
            request={"prompt": "p", "seeds": list(range(images))},
            batch_key="k",
        )
        await db.jobs.claim([row.id], lease_owner="w", lease_seconds=60)
        if status == "done":
            await db.jobs.complete(
                row.id,
                [NewImage(i, i, f"{row.id:064x}.png", 8, 8) for i in range(images)],
                render_seconds=secs,
            )
        elif status == "failed":
            await db.jobs.fail(row.id, "boom")
        else:
            await db.jobs.finish_cancelled(row.id)

    for _ in range(3):
        await job(1, "done")
    await job(2, "done", images=4)
    await job(2, "failed")
    await job(3, "cancelled")
    summary = await db.stats.summary(1)
    assert (summary.jobs, summary.done, summary.failed, summary.cancelled, summary.images) == (6, 4, 1, 1, 10)
    assert summary.render_seconds == 12.0
    assert summary.failure_rate == pytest.approx(1 / 5)
    assert await db.stats.top_users(1) == [(1, 6), (2, 4)]
    today = time.strftime("%Y-%m-%d", time.gmtime())
    assert await db.stats.jobs_per_day(1) == [(today, 6)]
    assert await db.stats.images_per_day(1) == [(today, 10)]
    assert (await db.stats.summary(2)).jobs == 0
