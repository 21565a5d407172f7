"""/admin through the sandbox: refused for plain members with nothing changed, working and audited for
moderators; the moderation rules enforced on /imagine and on buttons alike."""

from __future__ import annotations

import asyncio
import io
from collections.abc import Callable
from typing import Any

from PIL import Image

from bot.app import App
from sandbox import MANAGE_GUILD, Sandbox
from tests.bot.helpers import button, imagine, job_id_of, results


async def answer(interaction: Any) -> Any:
    """The bot's ephemeral answer to an interaction (response or followup)."""
    await interaction.wait_ack()
    original = interaction.original
    if original is not None and (original.content or original.attachments):
        return original
    return interaction.followups[-1] if interaction.followups else interaction.original


async def admin(sandbox: Sandbox, user: Any, channel: Any, sub: str, options: dict[str, Any] | None = None,
                group: str | None = None) -> Any:
    interaction = await sandbox.slash(user, channel, "admin", options or {}, subcommand=sub, group=group)
    await interaction.wait_ack()
    if interaction.response_type == 5:  # deferred: the answer is a followup
        await sandbox.wait_for(lambda: interaction.followups, timeout=30)
    return await answer(interaction)


async def state(app: App, sandbox: Sandbox) -> dict[str, Any]:
    """Everything an /admin command could change."""
    assert app.services is not None
    db, gid = app.services.db, sandbox.guild.id
    jobs = await db.jobs.list_for_user(sandbox.users["bob"].id, limit=100)
    return {
        "guild": await db.guilds.get(gid),
        "words": await db.moderation.banned_words(gid),
        "bans": [(b.user_id, b.reason) for b in await db.moderation.bans(gid)],
        "audit": [(e.action, e.target) for e in await db.audit.list(gid, limit=1000)],
        "paused": app.services.scheduler.paused_in(gid),
        "jobs": [(j.id, j.status) for j in jobs],
    }


async def test_every_admin_subcommand_is_refused_for_members_and_audited_for_moderators(
        sandbox: Sandbox, bot: App) -> None:
    assert bot.services is not None
    alice, bob, mod = sandbox.users["alice"], sandbox.users["bob"], sandbox.users["mod"]
    general, art = sandbox.channel("general"), sandbox.channel("art")
    await bot.services.scheduler.pause()  # bob's jobs stay queued, so cancel and purge have work to do
    queued = await imagine_queued(bot, sandbox, bob, art, "a queued boat --steps 2")
    purged = await imagine_queued(bot, sandbox, bob, art, "a queued ship --steps 2")

    calls: list[tuple[str | None, str, Callable[[], dict[str, Any]], str]] = [
        ("words", "add", lambda: {"word": "ass"}, "words.add"),
        ("words", "list", lambda: {}, "words.list"),
        ("words", "remove", lambda: {"word": "ass"}, "words.remove"),
        (None, "limits", lambda: {"max_steps": 30, "cooldown": 5}, "limits"),
        ("channels", "allow", lambda: {"channel": art}, "channels.allow"),
        ("channels", "deny", lambda: {"channel": general}, "channels.deny"),
        ("channels", "list", lambda: {}, "channels.list"),
        (None, "nsfw", lambda: {"mode": "block"}, "nsfw"),
        ("queue", "view", lambda: {}, "queue.view"),
        ("queue", "cancel", lambda: {"job": queued}, "queue.cancel"),
        ("queue", "purge", lambda: {"user": bob}, "queue.purge"),
        ("queue", "resume", lambda: {}, "queue.resume"),
        ("queue", "pause", lambda: {}, "queue.pause"),
        (None, "ban", lambda: {"user": bob, "reason": "spam"}, "ban"),
        (None, "unban", lambda: {"user": bob}, "unban"),
        (None, "stats", lambda: {"days": 7}, "stats"),
        (None, "audit", lambda: {}, "audit.view"),
        (None, "workers", lambda: {}, "workers.view"),
    ]
    for group, sub, options, action in calls:
        name = f"/admin {group + ' ' if group else ''}{sub}"
        before = await state(bot, sandbox)
        refused = await admin(sandbox, alice, general, sub, options(), group)
        assert refused.ephemeral and "Manage Server" in refused.content, name
        assert await state(bot, sandbox) == before, f"{name} by a member changed something"

        done = await admin(sandbox, mod, general, sub, options(), group)
        assert done.ephemeral and "Manage Server" not in done.content, name
        latest = (await bot.services.db.audit.list(sandbox.guild.id, limit=1))[0]
        assert latest.action == action and latest.actor_id == mod.id, name

    # What the moderator did took effect.
    after = await state(bot, sandbox)
    assert after["words"] == [] and after["bans"] == []
    assert after["guild"]["max_steps"] == 30 and after["guild"]["nsfw"] == "block"
    assert after["guild"]["allowed_channels"] == [art.id]
    assert after["guild"]["denied_channels"] == [general.id]
    assert dict(after["jobs"])[queued] == "cancelled" and dict(after["jobs"])[purged] == "cancelled"
    assert after["paused"] is True
    await bot.services.scheduler.resume(sandbox.guild.id)
    await bot.services.scheduler.resume()


async def imagine_queued(app: App, sandbox: Sandbox, user: Any, channel: Any, prompt: str) -> int:
    """Run /imagine while the queue is paused; returns the queued job's id."""
    assert app.services is not None
    interaction = await sandbox.slash(user, channel, "imagine", {"prompt": prompt})
    await interaction.wait_ack()
    assert interaction.original is not None and "queued" in interaction.original.content
    return (await app.services.db.jobs.list_for_user(user.id, limit=1))[0].id


async def refused(interaction: Any) -> str:
    message = await answer(interaction)
    assert message is not None and message.ephemeral, "expected an ephemeral refusal"
    return str(message.content)


async def jobs_of(app: App, user: Any) -> int:
    assert app.services is not None
    return len(await app.services.db.jobs.list_for_user(user.id, limit=1000))


async def test_rules_hold_on_imagine_and_on_buttons(sandbox: Sandbox, bot: App) -> None:
    assert bot.services is not None
    db, gid = bot.services.db, sandbox.guild.id
    alice, bob, mod = sandbox.users["alice"], sandbox.users["bob"], sandbox.users["mod"]
    general, art, nsfw = sandbox.channel("general"), sandbox.channel("art"), sandbox.channel("nsfw-art")
    result = await imagine(sandbox, alice, general, "a small house --steps 4 --seed 5 --n 1")
    n = await jobs_of(bot, alice)

    async def both_refused(expect: str, prompt: str = "a small house --steps 4",
                           label: str = "🔄", user: Any = alice, channel: Any = general) -> None:
        text = await refused(await sandbox.slash(user, channel, "imagine", {"prompt": prompt}))
        assert expect in text, text
        text = await refused(await sandbox.click(user, result, button(result, label)))
        assert expect in text, text
        assert await jobs_of(bot, alice) == n, "a refused request was queued"

    # Limits: steps, size, count.
    await admin(sandbox, mod, general, "limits", {"max_steps": 3})
    await both_refused("at most 3 steps")
    await admin(sandbox, mod, general, "limits", {"reset": True, "max_size": 256})
    await both_refused("256 px", label="Upscale")
    await admin(sandbox, mod, general, "limits", {"reset": True, "max_count": 1})
    text = await refused(await sandbox.slash(alice, general, "imagine", {"prompt": "a house --n 2"}))
    assert "at most 1 images" in text
    # Cooldown: alice made a job a moment ago.
    await admin(sandbox, mod, general, "limits", {"reset": True, "cooldown": 3600})
    await both_refused("Slow down")
    await admin(sandbox, mod, general, "limits", {"reset": True})

    # Channels: denied here, allowed elsewhere.
    await admin(sandbox, mod, general, "deny", {"channel": general}, group="channels")
    await both_refused("not available in this channel")
    await admin(sandbox, mod, general, "allow", {"channel": art}, group="channels")
    text = await refused(await sandbox.slash(alice, sandbox.channel("nsfw-art"), "imagine",
                                             {"prompt": "a house"}))
    assert "not available in this channel" in text and f"<#{art.id}>" in text
    await db.guilds.reset(gid, ["allowed_channels", "denied_channels"])

    # Bans.
    await admin(sandbox, mod, general, "ban", {"user": alice, "reason": "flooding"})
    await both_refused("banned")
    await admin(sandbox, mod, general, "unban", {"user": alice})

    # Banned words, also when an old prompt is rerolled after the word was banned.
    await admin(sandbox, mod, general, "add", {"word": "house"}, group="words")
    await both_refused("does not allow", prompt="a h.o.u.s.e in the woods")
    await admin(sandbox, mod, general, "remove", {"word": "house"}, group="words")

    # NSFW policy on prompts: blocked; then only in the age-restricted channel.
    await admin(sandbox, mod, general, "nsfw", {"mode": "block"})
    text = await refused(await sandbox.slash(alice, nsfw, "imagine", {"prompt": "a nude statue"}))
    assert "not allowed" in text
    await admin(sandbox, mod, general, "nsfw", {"mode": "age_restricted"})
    text = await refused(await sandbox.slash(alice, general, "imagine", {"prompt": "a n.u.d.e statue"}))
    assert "age-restricted" in text
    assert await jobs_of(bot, alice) == n
    ok = await sandbox.slash(alice, nsfw, "imagine", {"prompt": "a nude statue --steps 2 --n 1"})
    await ok.wait_ack()
    assert ok.original is not None and not ok.original.ephemeral and "queued" in ok.original.content
    assert await jobs_of(bot, alice) == n + 1

    # Every rejected prompt is in the audit log, with who and what.
    rejected = [e for e in await db.audit.list(gid, limit=200) if e.action == "prompt.rejected"]
    assert len(rejected) == 4
    assert all(e.actor_id == alice.id for e in rejected)
    assert {e.details["reason"] for e in rejected} == {"banned word: house", "nsfw: blocked",
                                                       "nsfw: not an age-restricted channel"}
    shown = await admin(sandbox, mod, general, "audit", {"action": "rejected"})
    assert "prompt.rejected" in shown.content and f"<@{alice.id}>" in shown.content
    assert bob.id not in {e.actor_id for e in rejected}


async def test_role_priority_and_queue_cap_come_from_the_guild(sandbox: Sandbox, bot: App) -> None:
    assert bot.services is not None
    alice, mod, general = sandbox.users["alice"], sandbox.users["mod"], sandbox.channel("general")
    vip = sandbox.add_role(sandbox.guild, "VIP", 0)
    sandbox.add_user("carol", sandbox.guild, roles=(vip,))
    carol = sandbox.users["carol"]
    await admin(sandbox, mod, general, "limits", {"role": vip, "priority": 3.0, "max_queued": 1})
    await bot.services.scheduler.pause()
    try:
        first = await sandbox.slash(carol, general, "imagine", {"prompt": "a lantern --steps 2 --n 1"})
        await first.wait_ack()
        second = await refused(await sandbox.slash(carol, general, "imagine", {"prompt": "a lamp --steps 2"}))
        assert "1 jobs waiting" in second
        entry = next(e for e in bot.services.scheduler.snapshot() if e.user_id == carol.id)
        assert entry.priority == 3.0
        other = await sandbox.slash(alice, general, "imagine", {"prompt": "a kite --steps 2 --n 1"})
        await other.wait_ack()
        entry = next(e for e in bot.services.scheduler.snapshot() if e.user_id == alice.id)
        assert entry.priority == 1.0
    finally:
        await bot.services.scheduler.cancel_all()
        await bot.services.scheduler.resume()


async def test_stats_draw_a_real_chart(sandbox: Sandbox, bot: App) -> None:
    alice, bob, mod = sandbox.users["alice"], sandbox.users["bob"], sandbox.users["mod"]
    general = sandbox.channel("general")
    await imagine(sandbox, alice, general, "a cloud --steps 2 --n 2")
    await imagine(sandbox, bob, general, "a tree --steps 2 --n 1")
    shown = await admin(sandbox, mod, general, "stats", {"days": 30})
    assert "2 jobs" in shown.content and "3 images" in shown.content and "0% failed" in shown.content
    assert f"<@{alice.id}> 2" in shown.content and f"<@{bob.id}> 1" in shown.content
    chart = Image.open(io.BytesIO(shown.attachments[0].data))
    assert chart.format == "PNG" and chart.size == (960, 600)
    colours = {c for _, c in chart.convert("RGB").getcolors(maxcolors=1_000_000) or []}
    assert {(88, 101, 242), (87, 242, 135), (254, 231, 92)} <= colours  # jobs, images, top users


async def test_nsfw_presentation_follows_the_policy(sandbox: Sandbox, bot: App) -> None:
    """How a finished image is shown: the safety checker's flag or an NSFW prompt, under each mode."""
    from bot.policy import nsfw_presentation
    from generation.request import RenderRequest

    assert bot.services is not None
    mod, general, gid = sandbox.users["mod"], sandbox.channel("general"), sandbox.guild.id
    calm = RenderRequest(prompt="a calm lake", model="tiny", width=64, height=64, steps=2, guidance=5.0,
                         sampler="euler", seeds=(1,))
    nude = RenderRequest(prompt="a nude statue", model="tiny", width=64, height=64, steps=2, guidance=5.0,
                         sampler="euler", seeds=(1,))
    expected = {
        "allow": ("show", "show"),
        "spoiler": ("spoiler", "spoiler"),
        "age_restricted": ("block", "show"),  # (ordinary channel, age-restricted channel)
        "block": ("block", "block"),
    }
    for mode, (ordinary, restricted) in expected.items():
        await admin(sandbox, mod, general, "nsfw", {"mode": mode})
        for flagged, request in ((True, calm), (False, nude)):
            assert await nsfw_presentation(bot.services, gid, False, request, flagged) == ordinary, mode
            assert await nsfw_presentation(bot.services, gid, True, request, flagged) == restricted, mode
        assert await nsfw_presentation(bot.services, gid, False, calm, False) == "show"
    # DMs: the operator's rule, NSFW blocked (there is no age-restricted channel in a DM).
    assert await nsfw_presentation(bot.services, None, False, nude, True) == "block"
    assert await nsfw_presentation(bot.services, None, False, calm, False) == "show"


async def test_queue_pause_holds_only_this_server_and_survives_a_restart(
        sandbox: Sandbox, start_bot: Callable[..., Any]) -> None:
    """A moderator's pause holds their server's jobs (members still queue, and are told why they
    wait) while other servers keep rendering; it outlives a restart; resume delivers the held jobs."""
    alice, mod, general = sandbox.users["alice"], sandbox.users["mod"], sandbox.channel("general")
    elsewhere = sandbox.add_guild("Elsewhere")
    lobby = sandbox.add_channel(elsewhere, "lobby")
    carol = sandbox.add_user("carol", elsewhere)
    app = await start_bot(ATELIER_DEV_GUILD_ID=None)  # commands in both servers

    paused = await admin(sandbox, mod, general, "pause", group="queue")
    assert "paused for this server" in paused.content
    held = await imagine_queued(app, sandbox, alice, general, "a held lantern --steps 2 --n 1")
    queued_message = await answer(await sandbox.slash(alice, general, "queue"))
    # The other server is not paused: its job renders while this one waits.
    assert job_id_of(await imagine(sandbox, carol, lobby, "an unpaused kite --steps 2 --n 1", timeout=60))
    assert app.services is not None and (await app.services.db.jobs.get(held)).status == "queued"
    announced = await sandbox.wait_for(lambda: next(
        (m for m in sandbox.messages(general) if "paused by this server's moderators" in m.content), None))
    assert "a held lantern" in announced.content
    assert queued_message is not None and "paused" in queued_message.content

    await app.stop()
    app = await start_bot(ATELIER_DEV_GUILD_ID=None)  # commands in both servers
    assert app.services is not None and app.services.scheduler.paused_in(sandbox.guild.id)
    assert not app.services.scheduler.paused_in(elsewhere.id)
    # The worker runs after the restart (another server's job renders) and still passes the held job by.
    assert job_id_of(await imagine(sandbox, carol, lobby, "a second kite --steps 2 --n 1", timeout=60))
    assert (await app.services.db.jobs.get(held)).status == "queued"
    view = await admin(sandbox, mod, general, "view", group="queue")
    assert "paused" in view.content and str(held) in view.content

    await admin(sandbox, mod, general, "resume", group="queue")
    result = await sandbox.wait_for(lambda: next(
        (m for m in results(sandbox, general) if job_id_of(m) == held), None), timeout=60)
    assert "a held lantern" in result.content
    assert [e.action for e in await app.services.db.audit.list(sandbox.guild.id, limit=2)] == [
        "queue.resume", "queue.view"]


async def test_a_moderator_cannot_cancel_another_servers_jobs(sandbox: Sandbox, start_bot: Callable[..., Any],
                                                              hold: Any) -> None:
    """/admin queue cancel with the id of another server's job (running or queued) is refused like an
    unknown id, changes nothing, and both jobs go on to deliver."""
    alice, general = sandbox.users["alice"], sandbox.channel("general")
    elsewhere = sandbox.add_guild("Elsewhere")
    lobby = sandbox.add_channel(elsewhere, "lobby")
    rival = sandbox.add_user("rival", elsewhere, roles=(sandbox.add_role(elsewhere, "Mods", MANAGE_GUILD),))
    app = await start_bot(ATELIER_DEV_GUILD_ID=None)  # commands in both servers
    assert app.services is not None
    db = app.services.db
    hold.close()  # the first job stays rendering while the second waits behind it
    for prompt in ("a running river --steps 2 --n 1", "a waiting well --steps 2 --n 1"):
        await (await sandbox.slash(alice, general, "imagine", {"prompt": prompt})).wait_ack()
    running, waiting = sorted(j.id for j in await db.jobs.list_for_user(alice.id, limit=2))
    assert await asyncio.to_thread(hold.holding.wait, 60)
    before = [(e.job_id, e.status) for e in app.services.scheduler.snapshot()]
    assert before == [(running, "running"), (waiting, "queued")]

    for job_id in (running, waiting):
        shown = await admin(sandbox, rival, lobby, "cancel", {"job": job_id}, group="queue")
        assert shown.ephemeral and f"Job {job_id} does not exist here" in shown.content
    assert [(e.job_id, e.status) for e in app.services.scheduler.snapshot()] == before
    assert await db.audit.list(elsewhere.id) == []

    hold.open()
    await sandbox.wait_for(lambda: len(results(sandbox, general)) == 2, timeout=60)
    assert sorted(job_id_of(m) for m in results(sandbox, general)) == [running, waiting]
