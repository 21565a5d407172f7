"""/settings through the sandbox: personal defaults apply to /imagine, explicit options and flags override
them, bad defaults are not saved, and private mode keeps results ephemeral and out of others' galleries."""

from __future__ import annotations

from typing import Any

from bot.app import App
from generation.request import RenderRequest
from sandbox import Sandbox
from tests.bot.helpers import imagine


async def settings(sandbox: Sandbox, user: Any, channel: Any, **options: Any) -> str:
    interaction = await sandbox.slash(user, channel, "settings", options)
    await interaction.wait_ack()
    assert interaction.original is not None and interaction.original.ephemeral
    return str(interaction.original.content)


async def queued_request(app: App, sandbox: Sandbox, user: Any, channel: Any, prompt: str,
                         **options: Any) -> tuple[Any, RenderRequest]:
    """Run /imagine (the queue is paused) and return its reply and the job's request."""
    assert app.services is not None
    interaction = await sandbox.slash(user, channel, "imagine", {"prompt": prompt, **options})
    await interaction.wait_ack()
    reply = interaction.original
    assert reply is not None and "queued" in reply.content, reply.content if reply else None
    job = (await app.services.db.jobs.list_for_user(user.id, limit=1))[0]
    return reply, RenderRequest.from_json(job.request)


async def test_defaults_apply_and_options_and_flags_override_them(sandbox: Sandbox, bot: App) -> None:
    assert bot.services is not None
    alice, bob, general = sandbox.users["alice"], sandbox.users["bob"], sandbox.channel("general")
    shown = await settings(sandbox, alice, general, steps=3, aspect="16:9", guidance=4.5,
                           negative="blurry, text", count=2)
    assert "Saved" in shown and "`3`" in shown and "`16:9`" in shown and "`blurry, text`" in shown
    await bot.services.scheduler.pause()
    try:
        _, request = await queued_request(bot, sandbox, alice, general, "a harbour")
        assert request.steps == 3 and request.guidance == 4.5 and request.count == 2
        assert request.width > request.height and request.negative == "blurry, text"

        # Explicit options win over defaults; inline flags win over both; --no replaces the default.
        _, request = await queued_request(bot, sandbox, alice, general, "a harbour --ar 1:1 --no boats",
                                          steps=5, count=1)
        assert request.steps == 5 and request.count == 1 and request.width == request.height
        assert request.negative == "boats"
        _, request = await queued_request(bot, sandbox, alice, general, "a harbour", negative="fog")
        assert request.negative == "fog"

        # Defaults are personal: bob gets the model's own.
        _, request = await queued_request(bot, sandbox, bob, general, "a harbour")
        spec = bot.services.registry.spec(None)
        assert request.steps == spec.default_steps and request.count == 4 and request.width == request.height
        assert request.negative == ""

        # Reset one, then all.
        shown = await settings(sandbox, alice, general, reset="steps")
        _, request = await queued_request(bot, sandbox, alice, general, "a harbour")
        assert request.steps == spec.default_steps and request.count == 2
        await settings(sandbox, alice, general, reset="all")
        assert await bot.services.db.users.get(alice.id) == {}
    finally:
        await bot.services.scheduler.cancel_all()
        await bot.services.scheduler.resume()


async def test_bad_defaults_are_refused_and_not_saved(sandbox: Sandbox, bot: App) -> None:
    assert bot.services is not None
    alice, general = sandbox.users["alice"], sandbox.channel("general")
    await settings(sandbox, alice, general, steps=4)
    shown = await settings(sandbox, alice, general, model="no-such-model", count=3)
    assert "Not saved" in shown and "no-such-model" in shown
    assert await bot.services.db.users.get(alice.id) == {"steps": 4}
    shown = await settings(sandbox, alice, general, model=bot.services.registry.names()[0])
    assert "Saved" in shown
    choices = await sandbox.autocomplete(alice, general, "settings", {}, "model")
    assert [c["value"] for c in choices] == bot.services.registry.names()


async def test_private_mode_keeps_results_ephemeral_and_out_of_other_galleries(sandbox: Sandbox,
                                                                              bot: App) -> None:
    assert bot.services is not None
    alice, bob, general = sandbox.users["alice"], sandbox.users["bob"], sandbox.channel("general")
    public = await imagine(sandbox, alice, general, "a public garden --steps 2 --seed 1 --n 1")
    assert not public.ephemeral
    shown = await settings(sandbox, alice, general, private=True)
    assert "private mode: on" in shown

    interaction = await sandbox.slash(alice, general, "imagine",
                                      {"prompt": "a secret garden --steps 2 --n 1"})
    await interaction.wait_ack()
    assert interaction.original is not None and interaction.original.ephemeral

    def private_done() -> Any:
        message = interaction.original
        return message if message is not None and message.attachments and message.buttons() else None

    message = await sandbox.wait_for(private_done, timeout=120)
    assert message.ephemeral and "secret garden" in message.content
    # Nobody else sees it in the channel.
    assert all("secret garden" not in m.content for m in sandbox.messages(general, viewer=bob))

    # Alice sees both in her gallery; bob sees only the public one.
    mine = await sandbox.slash(alice, general, "gallery", {})
    await mine.wait_ack()
    await sandbox.wait_for(lambda: mine.followups, timeout=30)
    assert "2 images" in mine.followups[0].content
    theirs = await sandbox.slash(bob, general, "gallery", {"user": alice})
    await theirs.wait_ack()
    await sandbox.wait_for(lambda: theirs.followups, timeout=30)
    page = theirs.followups[0]
    assert "1 image," in page.content
    options = [o for row in page.components for c in row.get("components", []) for o in c.get("options", [])]
    assert len(options) == 1 and "public garden" in options[0]["label"]
