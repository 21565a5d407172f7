"""Who may see what, through the sandbox: one rule (bot/access.py) behind /job, every button, /gallery,
/queue and /admin queue cancel; /job presents a result as the answering channel allows; DMs are off by
default and, when on, private to their owner under the operator's rules; guild limits stay under the
operator's; interaction tokens never reach the logs."""

from __future__ import annotations

import logging
from typing import Any

import pytest

from sandbox import Sandbox, SandboxError
from tests.bot.helpers import imagine, job_id_of
from tests.bot.test_admin import admin, answer
from tests.bot.test_user_settings import settings

# Global commands (no dev guild): the only kind Discord offers in DMs and in a second server.
GLOBAL = {"ATELIER_DEV_GUILD_ID": None}
DMS = {**GLOBAL, "ATELIER_ALLOW_DMS": "true"}


async def slash_answer(sandbox: Sandbox, who: Any, channel: Any, name: str, **options: Any) -> Any:
    return await answer(await sandbox.slash(who, channel, name, options))


def does_not_exist(message: Any, job_id: int) -> bool:
    return bool(message.ephemeral and f"Job {job_id} does not exist here." in message.content
                and not message.attachments)


async def test_jobs_of_other_servers_dms_and_private_mode_do_not_exist(sandbox: Sandbox,
                                                                       start_bot: Any) -> None:
    other = sandbox.add_guild("Other")
    lobby = sandbox.add_channel(other, "lobby")
    alice, bob, mod = sandbox.users["alice"], sandbox.users["bob"], sandbox.users["mod"]
    sandbox.add_user("bob", other)
    await start_bot(**DMS)
    general = sandbox.channel("general")

    public = job_id_of(await imagine(sandbox, alice, general, "a public kite --steps 2 --n 1"))
    in_dm = await imagine(sandbox, alice, sandbox.dm_channel(alice), "a diary page --steps 2 --n 1")
    dm_job = job_id_of(in_dm)
    await settings(sandbox, alice, general, private=True)
    secret = await sandbox.slash(alice, general, "imagine", {"prompt": "a secret kite --steps 2 --n 1"})
    await secret.wait_ack()
    await sandbox.wait_for(lambda: secret.original is not None and secret.original.attachments, timeout=120)
    assert secret.original is not None
    private_job = job_id_of(secret.original)

    # /job: another server's job, someone's DM job (even for its owner, in a server) and another's
    # private job all answer as a missing job would.
    assert does_not_exist(await slash_answer(sandbox, bob, lobby, "job", id=public), public)
    for viewer in (bob, alice):
        assert does_not_exist(await slash_answer(sandbox, viewer, general, "job", id=dm_job), dm_job)
    assert does_not_exist(await slash_answer(sandbox, bob, general, "job", id=private_job), private_job)
    # In her DM the owner gets it back.
    mine = await slash_answer(sandbox, alice, sandbox.dm_channel(alice), "job", id=dm_job)
    assert "a diary page" in mine.content and mine.attachments

    # Buttons crafted with those jobs' custom_ids, sent from a message bob can click.
    shown = await sandbox.slash(bob, general, "job", {"id": public})
    await shown.wait_ack()
    assert shown.original is not None and shown.original.attachments
    for custom_id, job_id in ((f"atelier:info:{dm_job}", dm_job), (f"atelier:up:{dm_job}:0", dm_job),
                              (f"atelier:fav:{dm_job}", dm_job), (f"atelier:info:{private_job}", private_job),
                              (f"atelier:reroll:{private_job}", private_job)):
        clicked = await answer(await sandbox.click_crafted(bob, shown.original, custom_id))
        assert does_not_exist(clicked, job_id), (custom_id, clicked.content)
        assert "diary" not in clicked.content and "secret" not in clicked.content

    # A moderator's /admin queue cancel reaches only their own server's jobs.
    refused = await answer(await sandbox.slash(mod, general, "admin", {"job": dm_job}, subcommand="cancel",
                                               group="queue"))
    assert does_not_exist(refused, dm_job)

    # Bob's DM: alice's gallery shows nothing of hers (DM images are their owner's only).
    theirs = await slash_answer(sandbox, bob, sandbox.dm_channel(bob), "gallery", user=alice)
    assert theirs.ephemeral and not theirs.attachments and "diary" not in theirs.content
    assert "No images" in theirs.content


async def test_job_presents_for_the_channel_it_answers_in(sandbox: Sandbox, start_bot: Any) -> None:
    # Every image flagged NSFW by the tiny checker (threshold 0), prompts innocent.
    await start_bot(own_engine=True, ATELIER_TINY_NSFW_THRESHOLD="0", **DMS)
    alice, bob, mod = sandbox.users["alice"], sandbox.users["bob"], sandbox.users["mod"]
    general, art, restricted = sandbox.channel("general"), sandbox.channel("art"), sandbox.channel("nsfw-art")
    made = await imagine(sandbox, alice, restricted, "a calm lake --steps 2 --n 1")
    assert not made.attachments[0].filename.startswith("SPOILER_")  # plain where it was made
    job_id = job_id_of(made)

    # In #general (not age-restricted) /job must not post the flagged image plainly.
    elsewhere = await slash_answer(sandbox, bob, general, "job", id=job_id)
    assert all(a.filename.startswith("SPOILER_") for a in elsewhere.attachments)
    assert "calm lake" in elsewhere.content
    again = await slash_answer(sandbox, bob, restricted, "job", id=job_id)
    assert again.attachments and not again.attachments[0].filename.startswith("SPOILER_")

    # A channel the moderators closed to the bot gets an answer only the asker sees.
    await admin(sandbox, mod, general, "deny", {"channel": art}, group="channels")
    closed = await slash_answer(sandbox, bob, art, "job", id=job_id)
    assert closed.ephemeral and "calm lake" in closed.content

    # In a DM the operator's rule holds: a flagged image is not shown.
    dm = sandbox.dm_channel(alice)
    asked = await sandbox.slash(alice, dm, "imagine", {"prompt": "a calm lake --steps 2 --n 1"})
    await asked.wait_ack()
    final = await sandbox.wait_for(
        lambda: asked.original if asked.original is not None and "hidden" in asked.original.content else None,
        timeout=120)
    assert not final.attachments and "NSFW" in final.content


async def test_commands_are_guild_only_unless_dms_are_allowed(sandbox: Sandbox, start_bot: Any) -> None:
    app = await start_bot(**GLOBAL)
    alice = sandbox.users["alice"]
    synced = sandbox.commands()
    assert synced and all(c.get("contexts") == [0] for c in synced), [(c["name"], c.get("contexts"))
                                                                      for c in synced]
    with pytest.raises(SandboxError, match="not offered in DMs"):
        await sandbox.slash(alice, sandbox.dm_channel(alice), "imagine", {"prompt": "a kite"})
    await app.stop()

    await start_bot(**DMS)
    by_name = {c["name"]: c.get("contexts") for c in sandbox.commands()}
    assert by_name["imagine"] == [0, 1] and by_name["admin"] == [0]
    with pytest.raises(SandboxError, match="not offered in DMs"):
        await sandbox.slash(alice, sandbox.dm_channel(alice), "admin", {}, subcommand="limits")


async def test_operator_rules_apply_in_dms(sandbox: Sandbox, start_bot: Any) -> None:
    app = await start_bot(**DMS)
    assert app.services is not None
    alice, bob, mod = sandbox.users["alice"], sandbox.users["bob"], sandbox.users["mod"]
    nsfw = await slash_answer(sandbox, alice, sandbox.dm_channel(alice), "imagine", prompt="a nude statue")
    assert nsfw.ephemeral and "NSFW" in nsfw.content
    # Banned in a server the bot is in: no way around it through a DM.
    await admin(sandbox, mod, sandbox.channel("general"), "ban", {"user": bob})
    banned = await slash_answer(sandbox, bob, sandbox.dm_channel(bob), "imagine", prompt="a kite")
    assert banned.ephemeral and "banned" in banned.content
    for user in (alice, bob):
        assert await app.services.db.jobs.list_for_user(user.id, limit=5) == []


async def test_guild_limits_cannot_exceed_the_operators(sandbox: Sandbox, start_bot: Any) -> None:
    app = await start_bot(ATELIER_QUEUE_MAX_PER_USER="2")
    assert app.services is not None
    mod, general = sandbox.users["mod"], sandbox.channel("general")
    refused = await admin(sandbox, mod, general, "limits", {"max_queued": 100})
    assert refused.ephemeral and "at most 2" in refused.content and "Saved" not in refused.content
    assert "max_queued" not in await app.services.db.guilds.get(sandbox.guild.id)
    lowered = await admin(sandbox, mod, general, "limits", {"max_queued": 1})
    assert "Saved" in lowered.content and "queued jobs per member: 1" in lowered.content


async def test_interaction_tokens_never_reach_the_logs(sandbox: Sandbox, start_bot: Any,
                                                       caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    await start_bot(ATELIER_LOG_LEVEL="DEBUG")
    alice, general = sandbox.users["alice"], sandbox.channel("general")
    await imagine(sandbox, alice, general, "a kite --steps 2 --n 1")  # callback, then webhook edits
    await slash_answer(sandbox, alice, general, "queue")
    tokens = [i.token for i in sandbox.interactions.values()]
    assert len(tokens) == 2
    text = caplog.text
    # The requests were logged (so the check below means something), with the token cut out.
    assert "/interactions/" in text and "/webhooks/" in text and "INTERACTION_CREATE" in text
    for token in tokens:
        assert token not in text
