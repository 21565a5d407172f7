"""The declared guild and member settings over a real SQLite file: typed reads with defaults, writes
that refuse an undeclared key and change nothing, and resets that leave other keys alone."""

from __future__ import annotations

import pytest

from bot.settings_keys import DEFAULT_NSFW, GUILD, LIMIT_KEYS, MEMBER, GuildSettings, MemberSettings
from storage import Database
from tests.storage import test_settings_moderation_audit_stats as storage_tests

db = storage_tests.db  # the storage tests' fixture: a fresh real SQLite file


async def test_declared_keys_read_typed_with_defaults(db: Database) -> None:
    assert await GUILD.get(db, 1) == GuildSettings()
    assert (await GUILD.get(db, 1)).nsfw == DEFAULT_NSFW
    saved = await GUILD.set(db, 1, {"max_steps": 30, "role_priority": {"7": 2}, "nsfw": "spoiler"})
    assert saved.max_steps == 30 and saved.role_priority == {7: 2.0} and saved.nsfw == "spoiler"
    assert await GUILD.get(db, 1) == saved
    assert await MEMBER.set(db, 5, {"steps": 4, "private": True}) == MemberSettings(steps=4, private=True)


async def test_an_undeclared_key_is_refused_and_nothing_changes(db: Database) -> None:
    await GUILD.set(db, 1, {"max_steps": 30})
    with pytest.raises(KeyError, match="max_stepz"):
        await GUILD.set(db, 1, {"max_stepz": 10, "max_count": 2})
    with pytest.raises(KeyError):
        await MEMBER.reset(db, 5, ["colour"])
    assert await db.guilds.get(1) == {"max_steps": 30}


async def test_resetting_limits_keeps_the_other_keys(db: Database) -> None:
    await GUILD.set(db, 1, {"max_steps": 30, "cooldown_s": 5, "denied_channels": [9]})
    await db.pauses.pause(1)  # the scheduler's own state, kept apart from the guild's settings
    after = await GUILD.reset(db, 1, LIMIT_KEYS)
    assert after.max_steps is None and after.cooldown_s == 0.0 and after.denied_channels == [9]
    assert await db.guilds.get(1) == {"denied_channels": [9]}
    assert await db.pauses.paused_guilds() == [1]
