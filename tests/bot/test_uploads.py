"""Members' own images (/imagine image: and the "Imagine from this image" menu) through the sandbox:
every check runs before the download, the header before the decode, and a refusal leaves nothing behind;
the pixel caps hold along the button chains; members refused again and again cool down."""

from __future__ import annotations

import io
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

from PIL import Image

from bot.app import App
from bot.policy import REFUSALS_BEFORE_COOLDOWN
from generation.images import fit_pixels
from generation.request import RenderRequest
from generation.validate import max_pixels
from sandbox import Sandbox
from tests.bot.helpers import button, click_for_result, imagine, job_id_of
from tests.bot.test_admin import admin
from tests.generation.test_uploads import blank_png, png_claiming


def blob_files(app: App) -> list[Path]:
    assert app.services is not None
    return [p for p in app.services.blobs.root.rglob("*") if p.is_file()]


async def job_rows(app: App, user: Any) -> list[Any]:
    assert app.services is not None
    return await app.services.db.jobs.list_for_user(user.id, limit=100)


async def upload(sandbox: Sandbox, user: Any, channel: Any, prompt: str, filename: str, data: bytes) -> Any:
    """/imagine with an attached image; returns the interaction once answered."""
    interaction = await sandbox.slash(user, channel, "imagine", {"prompt": prompt},
                                      attachments={"image": (filename, data)})
    await interaction.wait_ack()
    return interaction


def png(size: tuple[int, int]) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", size, (200, 120, 40)).save(buf, format="PNG")
    return buf.getvalue()


async def test_a_tiny_header_claiming_30000_squared_is_refused_and_stores_nothing(
        sandbox: Sandbox, bot: App) -> None:
    alice, general = sandbox.users["alice"], sandbox.channel("general")
    header = png_claiming(30000, 30000)
    assert len(header) < 70
    refused = await upload(sandbox, alice, general, "a fox", "huge.png", header)
    assert refused.original.ephemeral
    assert "too large" in refused.original.content and "megapixels" in refused.original.content
    assert blob_files(bot) == [] and await job_rows(bot, alice) == []


async def test_a_small_file_with_huge_dimensions_is_refused_from_the_context_menu(
        sandbox: Sandbox, bot: App) -> None:
    # 48 MP of real pixels in a few KiB: refused from its header, so never decoded (today it is
    # decoded to ~150 MB and queued).
    alice, bob, general = sandbox.users["alice"], sandbox.users["bob"], sandbox.channel("general")
    data = blank_png(8000, 6000)
    assert len(data) < 64 * 1024
    posted = await sandbox.post_message(alice, general, "look", attachments=[("wide.png", data)])
    menu = await sandbox.message_command(bob, general, "Imagine from this image", posted)
    assert await menu.wait_ack() == 9 and menu.modal is not None
    submit = await sandbox.submit_modal(bob, general, menu.modal["custom_id"], {"prompt": "a night sky"})
    await submit.wait_ack()
    assert submit.original.ephemeral and "8000×6000" in submit.original.content
    assert blob_files(bot) == [] and await job_rows(bot, bob) == []


async def test_a_banned_members_upload_is_refused_before_it_is_fetched(sandbox: Sandbox, bot: App) -> None:
    # The bytes are not an image at all: a member who gets the ban message was refused before the bot
    # looked at them (today: "not an image I can read", after the download).
    assert bot.services is not None
    bob, general = sandbox.users["bob"], sandbox.channel("general")
    await bot.services.db.moderation.ban(sandbox.guild.id, bob.id, reason="spam")
    refused = await upload(sandbox, bob, general, "a fox", "photo.png", b"\x89PNG not really an image")
    assert refused.original.ephemeral and "banned" in refused.original.content
    assert blob_files(bot) == [] and await job_rows(bot, bob) == []
    # The same goes for a banned word, checked on the prompt before the download.
    await bot.services.db.moderation.add_banned_word(sandbox.guild.id, "gore")
    alice = sandbox.users["alice"]
    refused = await upload(sandbox, alice, general, "some gore", "photo.png", b"\x89PNG not really an image")
    assert refused.original.ephemeral and "does not allow" in refused.original.content
    assert blob_files(bot) == [] and await job_rows(bot, alice) == []


async def test_a_large_legal_image_is_stored_cut_to_the_models_limit_and_outlives_a_sweep(
        sandbox: Sandbox, bot: App) -> None:
    assert bot.services is not None
    alice, general = sandbox.users["alice"], sandbox.channel("general")
    await bot.services.scheduler.pause()  # the gate: the job stays queued, its source only in its request
    answered = await upload(sandbox, alice, general, "a harbour --steps 2", "big.png", png((3000, 2000)))
    assert not answered.original.ephemeral and "queued" in answered.original.content
    [job] = await job_rows(bot, alice)
    request = RenderRequest.from_json(job.request)
    assert request.source is not None
    stored = bot.services.blobs.open_image(request.source)
    cap = max_pixels(bot.services.registry.spec(request.model).family)
    assert stored.size == fit_pixels((3000, 2000), cap) and stored.size[0] * stored.size[1] <= cap
    assert [p.name for p in blob_files(bot)] == [request.source]
    # A sweep with no grace at all keeps the queued job's upload and takes an orphan.
    orphan = bot.services.blobs.put(png((8, 8)))
    result = await bot.services.collect_blobs(grace_s=-60)
    assert result.removed == 1 and not bot.services.blobs.exists(orphan)
    assert bot.services.blobs.exists(request.source)


async def test_upscale_vary_upscale_stays_within_the_models_cap(sandbox: Sandbox, bot: App) -> None:
    assert bot.services is not None
    alice, general = sandbox.users["alice"], sandbox.channel("general")
    single = await imagine(sandbox, alice, general, "a lighthouse --seed 3 --steps 4 --n 1")
    upscaled = await click_for_result(sandbox, alice, general, single, "Upscale")
    varied = await click_for_result(sandbox, alice, general, upscaled, "Vary (Subtle)")
    request = RenderRequest.from_json((await bot.services.db.jobs.get(job_id_of(varied))).request)  # type: ignore[union-attr]
    cap = max_pixels(bot.services.registry.spec(request.model).family)
    assert request.width * request.height * 4 > cap  # another 2x would pass this SD1.5 model's cap
    again = await sandbox.click(alice, varied, button(varied, "Upscale"))
    await again.wait_ack()
    assert again.original.ephemeral and "already as large" in again.original.content
    sizes = [(j.request["width"], j.request["height"]) for j in await job_rows(bot, alice)]
    assert len(sizes) == 3 and all(w * h <= cap for w, h in sizes)


async def test_repeated_refusals_earn_a_cooldown_that_survives_a_restart(
        sandbox: Sandbox, start_bot: Callable[..., Any]) -> None:
    app = await start_bot()
    assert app.services is not None
    bob, alice, general = sandbox.users["bob"], sandbox.users["alice"], sandbox.channel("general")
    await app.services.db.moderation.add_banned_word(sandbox.guild.id, "dragon")
    await app.services.scheduler.pause()
    for i in range(REFUSALS_BEFORE_COOLDOWN):
        refused = await sandbox.slash(bob, general, "imagine", {"prompt": f"a dragon number {i}"})
        await refused.wait_ack()
        assert refused.original.ephemeral and "does not allow" in refused.original.content
    assert "please wait" in refused.original.content  # the last refusal says what comes next
    actions = [e.action for e in await app.services.db.audit.list(sandbox.guild.id, limit=50)]
    assert actions.count("prompt.rejected") == REFUSALS_BEFORE_COOLDOWN
    assert actions.count("prompt.cooldown") == 1

    await app.stop()
    app = await start_bot()
    assert app.services is not None
    await app.services.scheduler.pause()
    clean = await sandbox.slash(bob, general, "imagine", {"prompt": "a quiet meadow --steps 2"})
    await clean.wait_ack()
    assert clean.original.ephemeral and re.search(r"try again in \d+ min", clean.original.content)
    assert await job_rows(app, bob) == []
    # Only bob cools down.
    other = await sandbox.slash(alice, general, "imagine", {"prompt": "a quiet meadow --steps 2"})
    await other.wait_ack()
    assert not other.original.ephemeral and len(await job_rows(app, alice)) == 1


async def test_admin_stats_show_the_data_dirs_size(sandbox: Sandbox, bot: App) -> None:
    assert bot.services is not None
    (bot.services.settings.data_dir / "ballast.bin").write_bytes(b"\0" * (3 * 2**20))
    shown = await admin(sandbox, sandbox.users["mod"], sandbox.channel("general"), "stats", {"days": 7})
    match = re.search(r"Data on disk: ([\d,.]+) MB", shown.content)
    assert match is not None and float(match.group(1).replace(",", "")) >= 3.0


async def test_an_attachment_gone_from_the_cdn_gets_a_clear_refusal(sandbox: Sandbox, bot: App) -> None:
    alice, general = sandbox.users["alice"], sandbox.channel("general")
    posted = await sandbox.post_message(alice, general, "look", attachments=[("cat.png", png((64, 64)))])
    del sandbox.attachments[posted.attachments[0].id]  # the CDN answers 404 from now on
    menu = await sandbox.message_command(alice, general, "Imagine from this image", posted)
    await menu.wait_ack()
    assert menu.modal is not None
    submit = await sandbox.submit_modal(alice, general, menu.modal["custom_id"], {"prompt": "a cat"})
    await submit.wait_ack()
    assert submit.original.ephemeral and "could not fetch" in submit.original.content
    assert blob_files(bot) == [] and await job_rows(bot, alice) == []
