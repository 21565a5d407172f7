"""/prefer through the sandbox: a member's custom option and suffix rewrite their own /imagine prompts (not
another member's), bad values are refused and not saved, and an option can be listed and removed."""

from __future__ import annotations

from typing import Any

from bot.app import App
from generation.request import RenderRequest
from sandbox import Sandbox


async def _prefer(sandbox: Sandbox, user: Any, sub: str, group: str | None = None, **options: Any) -> str:
    interaction = await sandbox.slash(user, sandbox.channel("general"), "prefer", options, subcommand=sub,
                                      group=group)
    await interaction.wait_ack()
    assert interaction.original is not None and interaction.original.ephemeral
    return str(interaction.original.content)


async def _queued(app: App, sandbox: Sandbox, user: Any, prompt: str) -> RenderRequest:
    assert app.services is not None
    interaction = await sandbox.slash(user, sandbox.channel("general"), "imagine", {"prompt": prompt})
    await interaction.wait_ack()
    assert interaction.original is not None and "queued" in interaction.original.content, interaction.original
    job = (await app.services.db.jobs.list_for_user(user.id, limit=1))[0]
    return RenderRequest.from_json(job.request)


async def test_custom_options_and_suffix_rewrite_the_members_prompts(sandbox: Sandbox, bot: App) -> None:
    assert bot.services is not None
    alice, bob = sandbox.users["alice"], sandbox.users["bob"]
    shown = await _prefer(sandbox, alice, "set", "option", name="mine", value="--ar 16:9 --steps 2")
    assert "`--mine` → `--ar 16:9 --steps 2`" in shown
    assert "Not saved" in await _prefer(sandbox, alice, "set", "option", name="bad", value="--ar 99:1")
    assert "built-in" in await _prefer(sandbox, alice, "set", "option", name="ar", value="--steps 2")
    assert "Not saved" in await _prefer(sandbox, alice, "suffix", value="--bogus 3")
    assert "Suffix set" in await _prefer(sandbox, alice, "suffix", value="film grain --n 1 --steps 3")
    listed = await _prefer(sandbox, alice, "list", "option")
    assert "`--mine`" in listed and "`--bad`" not in listed and "film grain" in listed

    await bot.services.scheduler.pause()
    try:
        request = await _queued(bot, sandbox, alice, "a harbour --mine")
        # The option's --steps beats the suffix's; the suffix's text and --n are added.
        assert request.prompt == "a harbour film grain" and request.width > request.height
        assert request.steps == 2 and request.count == 1
        # Another member's prompt is theirs alone: --mine is unknown to them.
        sent = await sandbox.slash(bob, sandbox.channel("general"), "imagine", {"prompt": "a harbour --mine"})
        await sent.wait_ack()
        assert sent.original is not None and "Unknown flag `--mine`" in sent.original.content

        assert "Removed `--mine`" in await _prefer(sandbox, alice, "set", "option", name="mine")
        assert "Suffix cleared" in await _prefer(sandbox, alice, "suffix")
        request = await _queued(bot, sandbox, alice, "a harbour")
        assert request.prompt == "a harbour" and request.count == 4
        assert await bot.services.db.users.get(alice.id) == {}
    finally:
        await bot.services.scheduler.cancel_all()
        await bot.services.scheduler.resume()
