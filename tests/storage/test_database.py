from __future__ import annotations

import json
import sqlite3
from pathlib import Path

import pytest

from storage import Database, SchemaTooNew
from storage.migrations import SCHEMA_VERSION
from tests.storage.old_schema import old_schema


async def test_migrations_from_empty_and_rerun_are_a_no_op(tmp_path: Path) -> None:
    path = tmp_path / "a.db"
    db = await Database.open(path)
    job = await db.jobs.create(
        user_id=1, kind="txt2img", request={"prompt": "x", "seeds": [1]}, batch_key="k"
    )
    await db.close()

    db = await Database.open(path)  # second open: migrations must not run again or lose data
    assert (await db.jobs.get(job.id)) is not None
    await db.close()

    conn = sqlite3.connect(path)
    assert conn.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
    assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type IN ('table', 'view')")}
    assert {
        "jobs",
        "images",
        "images_fts",
        "guild_settings",
        "user_settings",
        "banned_words",
        "user_bans",
        "audit_log",
    } <= tables
    conn.close()


async def test_newer_schema_is_a_clear_error(tmp_path: Path) -> None:
    path = tmp_path / "a.db"
    conn = sqlite3.connect(path)
    conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 1}")
    conn.close()
    with pytest.raises(SchemaTooNew, match="newer than this code"):
        await Database.open(path)


async def test_foreign_keys_are_enforced(tmp_path: Path) -> None:
    db = await Database.open(tmp_path / "a.db")
    try:
        with pytest.raises(sqlite3.IntegrityError):
            await db.connection.write(
                "INSERT INTO images (job_id, idx, seed, blob, width, height, created_at, user_id) "
                "VALUES (999, 0, 1, 'b', 8, 8, 0, 1)"
            )
    finally:
        await db.close()


async def test_failed_transaction_rolls_back(tmp_path: Path) -> None:
    db = await Database.open(tmp_path / "a.db")
    try:
        with pytest.raises(RuntimeError):
            async with db.connection.transaction() as conn:
                await conn.execute("INSERT INTO audit_log (action, created_at) VALUES ('x', 0)")
                raise RuntimeError("boom")
        assert await db.audit.list(None) == []
    finally:
        await db.close()


async def test_guild_pauses_move_out_of_the_guild_settings_and_stay_paused(tmp_path: Path) -> None:
    """Migration 6: a queue paused under the old schema (a key in the guild's settings) is still paused,
    now in the pause table, and the guild's own settings keep everything else."""
    path = tmp_path / "a.db"
    with old_schema(path, 5) as conn:
        for guild_id, data in [(10, {"queue_paused": True, "max_steps": 20}), (20, {"nsfw": "allow"})]:
            conn.execute("INSERT INTO guild_settings (guild_id, data, updated_at) VALUES (?, ?, 0)",
                         (guild_id, json.dumps(data)))
    db = await Database.open(path)
    try:
        assert await db.pauses.paused_guilds() == [10]
        assert await db.guilds.get(10) == {"max_steps": 20}
        assert await db.guilds.get(20) == {"nsfw": "allow"}
        # The bot resetting its settings no longer touches the pause, and pausing twice is harmless.
        await db.guilds.reset(10)
        await db.pauses.pause(10)
        await db.pauses.pause(30)
        assert await db.pauses.paused_guilds() == [10, 30]
        await db.pauses.resume(10)
        await db.pauses.resume(10)
        assert await db.pauses.paused_guilds() == [30]
    finally:
        await db.close()
