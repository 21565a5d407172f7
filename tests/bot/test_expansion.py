"""Permutations and --repeat through /imagine in the sandbox: one prompt becomes separate jobs (each its own
message and row), the member's queue cap and the banned words hold for every expanded prompt, and above
four jobs an ephemeral Confirm / Cancel that only its author may use, that survives a restart, and that
queues once however often it is clicked."""

from __future__ import annotations

from typing import Any

from bot.app import App
from bot.settings_keys import GUILD
from generation.request import RenderRequest
from sandbox import Sandbox
from tests.bot.helpers import button


async def _requests(app: App, user: Any) -> list[RenderRequest]:
    assert app.services is not None
    jobs = await app.services.db.jobs.list_for_user(user.id, limit=100)
    return [RenderRequest.from_json(job.request) for job in sorted(jobs, key=lambda j: j.id)]


async def _imagine(sandbox: Sandbox, user: Any, channel: Any, prompt: str) -> Any:
    interaction = await sandbox.slash(user, channel, "imagine", {"prompt": prompt})
    await interaction.wait_ack()
    return interaction


async def test_permutations_become_separate_jobs_each_with_its_message(sandbox: Sandbox, bot: App) -> None:
    assert bot.services is not None
    alice, general = sandbox.users["alice"], sandbox.channel("general")
    await bot.services.scheduler.pause()
    try:
        sent = await _imagine(sandbox, alice, general, "{red, blue} bird --ar {1:1, 16:9} --steps 1 --n 1")
        await sandbox.wait_for(lambda: len(sent.followups) == 3, timeout=30)
        requests = await _requests(bot, alice)
        assert [(r.prompt, r.width > r.height) for r in requests] == [
            ("red bird", False), ("red bird", True), ("blue bird", False), ("blue bird", True)]
        # Four public "queued" messages, one per job, each recorded as its job's message.
        messages = [sent.original, *sent.followups]
        assert all(m is not None and not m.ephemeral and "queued" in m.content for m in messages)
        jobs = await bot.services.db.jobs.list_for_user(alice.id, limit=10)
        assert sorted(j.message_id for j in jobs) == sorted(m.id for m in messages)
    finally:
        await bot.services.scheduler.cancel_all()
        await bot.services.scheduler.resume()


async def test_the_queue_cap_and_banned_words_hold_for_every_expanded_prompt(sandbox: Sandbox,
                                                                            bot: App) -> None:
    assert bot.services is not None
    alice, general = sandbox.users["alice"], sandbox.channel("general")
    await bot.services.scheduler.pause()
    try:
        # 6 jobs past the cap of 5 (ATELIER_QUEUE_MAX_PER_USER's default): refused whole, nothing queued.
        sent = await _imagine(sandbox, alice, general, "{a fox, an owl, a cat} --repeat 2 --steps 1")
        assert sent.original is not None and sent.original.ephemeral
        assert "6 jobs" in sent.original.content and "Nothing was queued" in sent.original.content
        assert await _requests(bot, alice) == []

        # One banned option refuses them all.
        await bot.services.db.moderation.add_banned_word(sandbox.guild.id, "dragon")
        sent = await _imagine(sandbox, alice, general, "a {castle, dragon} at dusk --steps 1")
        assert sent.original is not None and sent.original.ephemeral
        assert "does not allow" in sent.original.content and not sent.followups
        assert await _requests(bot, alice) == []

        # A bad --repeat is a clear message too.
        sent = await _imagine(sandbox, alice, general, "a castle --repeat 99")
        assert sent.original is not None and "--repeat" in sent.original.content

        # The cooldown holds the expansion as one command: all of it may start, then nothing until it ends.
        await GUILD.set(bot.services.db, sandbox.guild.id, {"cooldown_s": 600})
        sent = await _imagine(sandbox, alice, general, "a {castle, tower} --steps 1")
        await sandbox.wait_for(lambda: len(sent.followups) == 1, timeout=30)
        assert [r.prompt for r in await _requests(bot, alice)] == ["a castle", "a tower"]
        sent = await _imagine(sandbox, alice, general, "a {moat, bridge} --steps 1")
        assert sent.original is not None and "Slow down" in sent.original.content
        assert len(await _requests(bot, alice)) == 2
    finally:
        await bot.services.scheduler.cancel_all()
        await bot.services.scheduler.resume()


async def test_more_than_four_jobs_wait_for_their_authors_confirmation_across_a_restart(
        sandbox: Sandbox, start_bot: Any) -> None:
    alice, bob, general = sandbox.users["alice"], sandbox.users["bob"], sandbox.channel("general")
    first = await start_bot()
    sent = await _imagine(sandbox, alice, general, "a lighthouse --repeat 5 --steps 1 --n 1")
    question = sent.original
    assert question is not None and question.ephemeral and "This will queue 5 jobs" in question.content
    assert await _requests(first, alice) == []

    # Cancel on another question queues nothing.
    other = (await _imagine(sandbox, alice, general, "{a, b, c, d, e} tree --steps 1")).original
    assert other is not None
    cancel = await sandbox.click(alice, other, button(other, "Cancel"))
    await cancel.wait_ack()
    assert "Cancelled" in other.content and not other.buttons()

    await first.stop()
    second = await start_bot()
    assert second.services is not None
    await second.services.scheduler.pause()
    try:
        # Only its author may confirm.
        stranger = await sandbox.click(bob, question, button(question, "Confirm"))
        await stranger.wait_ack()
        assert stranger.original is not None and "Only the member" in stranger.original.content
        assert await _requests(second, alice) == [] and await _requests(second, bob) == []

        confirm_id = button(question, "Confirm")
        confirmed = await sandbox.click(alice, question, confirm_id)
        await confirmed.wait_ack()
        await sandbox.wait_for(lambda: len(confirmed.followups) == 5, timeout=30)
        assert "Confirmed" in question.content and not question.buttons()
        assert [r.prompt for r in await _requests(second, alice)] == ["a lighthouse"] * 5
        assert all(not m.ephemeral and "queued" in m.content for m in confirmed.followups)

        # The same click again (a stale client, a double tap) queues nothing more.
        again = await sandbox.click_crafted(alice, question, confirm_id)
        await again.wait_ack()
        assert again.original is not None and "Already confirmed" in again.original.content
        assert len(await _requests(second, alice)) == 5
    finally:
        await second.services.scheduler.cancel_all()
        await second.services.scheduler.resume()
