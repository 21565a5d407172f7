"""/describe and the "Describe this image" menu through the sandbox, with the tiny offline BLIP captioner:
four different suggestions, Imagine buttons that work after a restart and queue as the clicker, refusals
that store nothing, and captioning that goes on while a render holds the engine."""

from __future__ import annotations

import asyncio
import io
from collections.abc import Callable
from typing import Any

from PIL import Image

from bot.app import App
from bot.settings_keys import GUILD, MEMBER
from generation.request import RenderRequest
from sandbox import Sandbox
from tests.bot.helpers import button, labels, result_for, shows_rendering
from tests.generation.test_uploads import png_claiming

TINY = {"ATELIER_CAPTION_MODEL": "tiny"}


def png(size: tuple[int, int], colour: tuple[int, int, int] = (200, 120, 40)) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", size, colour).save(buf, format="PNG")
    return buf.getvalue()


async def description_rows(app: App) -> list[Any]:
    assert app.services is not None
    return await app.services.db.connection.fetchall("SELECT * FROM descriptions")


async def describe(sandbox: Sandbox, user: Any, channel: Any, data: bytes) -> Any:
    """/describe an image; returns the message with the suggestions (or the ephemeral refusal)."""
    interaction = await sandbox.slash(user, channel, "describe", attachments={"image": ("photo.png", data)})
    await interaction.wait_ack()
    return await sandbox.wait_for(lambda: interaction.original if interaction.original is not None
                                  and interaction.original.content else None, timeout=60)


def suggestions(message: Any) -> list[str]:
    return [line.split(" ", 1)[1] for line in message.content.splitlines()[1:]]


async def test_four_different_prompts_whose_buttons_queue_them_as_the_clicker_after_a_restart(
        sandbox: Sandbox, start_bot: Callable[..., Any]) -> None:
    alice, bob, general = sandbox.users["alice"], sandbox.users["bob"], sandbox.channel("general")
    app = await start_bot(**TINY)
    shown = await describe(sandbox, alice, general, png((300, 200), (40, 120, 200)))
    assert not shown.ephemeral and shown.attachments
    prompts = suggestions(shown)
    # Four different prompts: the captioner's text, a medium each, the image's own aspect.
    assert len(prompts) == 4 and len(set(prompts)) == 4
    assert all(p.endswith("--ar 3:2") and "vivid blue palette" in p for p in prompts)
    assert labels(shown) == ["Imagine 1", "Imagine 2", "Imagine 3", "Imagine 4", "Imagine all"]
    [row] = await description_rows(app)
    assert row["user_id"] == alice.id
    # A restart: the buttons read the stored suggestions, not memory.
    await app.stop()
    app = await start_bot(**TINY)
    assert app.services is not None
    await MEMBER.set(app.services.db, bob.id, {"steps": 2, "count": 1})  # quick renders
    clicked = await sandbox.click(bob, shown, button(shown, "Imagine 2"))
    await clicked.wait_ack()
    [job] = await app.services.db.jobs.list_for_user(bob.id, limit=10)
    request = RenderRequest.from_json(job.request)
    assert prompts[1].startswith(request.prompt) and (request.width, request.height) != (512, 512)
    assert await sandbox.wait_for(lambda: result_for(sandbox, general, job.id), timeout=60)
    # "Imagine all": four more jobs for bob, each with its own message that turns into its result.
    everything = await sandbox.click(bob, shown, button(shown, "Imagine all"))
    await everything.wait_ack()
    await sandbox.wait_for(lambda: len(everything.followups) == 3, timeout=30)
    jobs = [j for j in await app.services.db.jobs.list_for_user(bob.id, limit=10) if j.id != job.id]
    assert sorted(RenderRequest.from_json(j.request).prompt for j in jobs) == sorted(
        p.removesuffix(" --ar 3:2") for p in prompts)
    for j in jobs:
        assert await sandbox.wait_for(lambda j=j: result_for(sandbox, general, j.id), timeout=60)
    assert not await app.services.db.jobs.list_for_user(alice.id, limit=10)
    # Another server's suggestions, named by a crafted custom_id, read as missing and queue nothing.
    theirs = await app.services.db.descriptions.add(sandbox.guild.id + 1, None, alice.id, ["secret"] * 4)
    crafted = await sandbox.click_crafted(bob, shown, f"atelier:desc:{theirs}:i1")
    await crafted.wait_ack()
    assert crafted.original.ephemeral and "gone" in crafted.original.content
    assert len(await app.services.db.jobs.list_for_user(bob.id, limit=10)) == 5


async def test_without_a_captioner_or_with_a_bomb_nothing_is_described(
        sandbox: Sandbox, start_bot: Callable[..., Any]) -> None:
    alice, general = sandbox.users["alice"], sandbox.channel("general")
    app = await start_bot()
    refused = await describe(sandbox, alice, general, png((64, 64)))
    assert refused.ephemeral and refused.content == "Describing images is not configured on this server."
    await app.stop()
    app = await start_bot(**TINY)
    # A few bytes claiming 30000² pixels: refused from the header, through the command and the menu.
    refused = await describe(sandbox, alice, general, png_claiming(30000, 30000))
    assert refused.ephemeral and "too large" in refused.content
    bomb = [("huge.png", png_claiming(30000, 30000))]
    posted = await sandbox.post_message(alice, general, "look", attachments=bomb)
    menu = await sandbox.message_command(alice, general, "Describe this image", posted)
    await menu.wait_ack()
    assert menu.original.ephemeral and "too large" in menu.original.content
    assert await description_rows(app) == []


async def test_the_menu_describes_while_a_render_holds_the_engine(
        sandbox: Sandbox, start_bot: Callable[..., Any], hold: Any) -> None:
    alice, bob, general = sandbox.users["alice"], sandbox.users["bob"], sandbox.channel("general")
    app = await start_bot(**TINY)
    hold.close()
    rendering = await sandbox.slash(alice, general, "imagine", {"prompt": "a lighthouse --steps 2 --n 1"})
    await rendering.wait_ack()
    await sandbox.wait_for(lambda: shows_rendering(rendering), timeout=30)
    dark = [("dark.png", png((64, 128), (10, 10, 40)))]
    posted = await sandbox.post_message(bob, general, "mine", attachments=dark)
    menu = await sandbox.message_command(bob, general, "Describe this image", posted)
    await menu.wait_ack()
    shown = await sandbox.wait_for(lambda: menu.original if menu.original and menu.original.content else None,
                                   timeout=60)
    assert len(set(suggestions(shown))) == 4 and all(p.endswith("--ar 9:16") for p in suggestions(shown))
    assert "low-key lighting" in shown.content
    [job] = await app.services.db.jobs.list_for_user(alice.id, limit=1)  # type: ignore[union-attr]
    assert job.status == "running"  # still held: the captioner did not wait for it
    hold.open()
    await asyncio.wait_for(sandbox.wait_for(lambda: result_for(sandbox, general, job.id), timeout=60), 90)


async def test_an_image_the_safety_checker_flags_follows_the_nsfw_policy(
        sandbox: Sandbox, start_bot: Callable[..., Any]) -> None:
    # The tiny stand-in checker flags every image at threshold 0; the server's default policy shows NSFW
    # in age-restricted channels only.
    alice, general = sandbox.users["alice"], sandbox.channel("general")
    restricted = sandbox.channel("nsfw-art")
    app = await start_bot(own_engine=True, ATELIER_TINY_NSFW_THRESHOLD="0", **TINY)
    refused = await describe(sandbox, alice, general, png((64, 64)))
    assert refused.ephemeral and "looks NSFW" in refused.content and not refused.attachments
    assert await description_rows(app) == []
    shown = await describe(sandbox, alice, restricted, png((64, 64)))
    assert not shown.ephemeral and len(suggestions(shown)) == 4
    assert not shown.attachments[0].filename.startswith("SPOILER_")
    assert app.services is not None
    await GUILD.set(app.services.db, sandbox.guild.id, {"nsfw": "spoiler"})
    spoiled = await describe(sandbox, alice, general, png((64, 64)))
    assert not spoiled.ephemeral and spoiled.attachments[0].filename.startswith("SPOILER_")
