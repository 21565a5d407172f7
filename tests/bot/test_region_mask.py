"""Vary (Region) with the member's own mask (/region job mask [prompt] [feather]) through the sandbox: only
the mask's area (and its feather) is repainted, every other pixel stays the source's exactly; a bad mask
or a job the member may not see is refused ephemerally and stores nothing; the job is rerollable and
outlives a restart mid-render."""

from __future__ import annotations

import asyncio
import io
import json
from typing import Any

import numpy as np
from PIL import Image

from bot.app import App
from generation.request import Kind, RenderRequest
from sandbox import Sandbox
from tests.bot.helpers import button, click_for_result, image_of, imagine, job_id_of, results
from tests.bot.test_access import DMS, does_not_exist
from tests.bot.test_admin import answer
from tests.bot.test_uploads import blob_files, job_rows
from tests.bot.test_user_settings import settings


def png(image: Image.Image) -> bytes:
    buf = io.BytesIO()
    image.save(buf, format="PNG")
    return buf.getvalue()


def right_half(size: tuple[int, int]) -> Image.Image:
    """Black (keep) with the right half white (repaint)."""
    w, h = size
    mask = Image.new("L", size, 0)
    mask.paste(255, (w // 2, 0, w, h))
    return mask


async def region(sandbox: Sandbox, user: Any, channel: Any, job: str, data: bytes,
                 filename: str = "mask.png", **options: Any) -> Any:
    interaction = await sandbox.slash(user, channel, "region", {"job": job, **options},
                                      attachments={"mask": (filename, data)})
    await interaction.wait_ack()
    return interaction


async def region_result(sandbox: Sandbox, user: Any, channel: Any, job: str, data: bytes,
                        **options: Any) -> Any:
    before = {m.id for m in results(sandbox, channel)}
    await region(sandbox, user, channel, job, data, **options)
    return await sandbox.wait_for(
        lambda: next((m for m in results(sandbox, channel) if m.id not in before), None), timeout=120)


async def masked_images(app: App, job_id: int) -> tuple[Any, RenderRequest, list[np.ndarray]]:
    assert app.services is not None
    job = await app.services.db.jobs.get(job_id)
    assert job is not None
    rows = sorted(await app.services.db.images.for_job(job_id), key=lambda r: r.index)
    images = [np.asarray(Image.open(io.BytesIO(app.services.blobs.read(r.blob))).convert("RGB"), np.int16)
              for r in rows]
    return job, RenderRequest.from_json(job.request), images


def check_repainted(images: list[np.ndarray], source: Image.Image, paint: np.ndarray) -> None:
    src = np.asarray(source, np.int16)
    assert images
    for px in images:
        assert (px[~paint] == src[~paint]).all()  # kept: identical, bit for bit
        assert np.abs(px[paint] - src[paint]).max() > 10  # repainted


async def test_a_mask_repaints_only_its_white_area_and_rerolls(sandbox: Sandbox, bot: App) -> None:
    alice, general = sandbox.users["alice"], sandbox.channel("general")
    grid = await imagine(sandbox, alice, general, "a harbour --seed 3 --steps 2 --n 2")
    parent_id = job_id_of(grid)
    assert bot.services is not None
    second = next(r.blob for r in await bot.services.db.images.for_job(parent_id) if r.index == 1)
    source = Image.open(io.BytesIO(bot.services.blobs.read(second))).convert("RGB")
    w, h = source.size
    # The second image of the grid, drawn at half scale.
    result = await region_result(sandbox, alice, general, f"{parent_id}.2",
                                 png(right_half((w // 4, h // 4))), prompt="a harbour at night")
    job, request, images = await masked_images(bot, job_id_of(result))
    assert request.kind == Kind.CANVAS and request.mask is not None and request.cells is None
    assert request.prompt == "a harbour at night" and job.parent_job_id == parent_id and job.parent_index == 1
    assert len(images) == 4 and "U1" in [b.get("label") for b in result.buttons()]
    stored = np.asarray(Image.open(io.BytesIO(bot.services.blobs.read(request.mask))))
    paint = stored == 255
    assert paint[:, w // 2 + 1:].all() and not paint[:, : w // 2 - 1].any()
    check_repainted(images, source, paint)

    details = await answer(await sandbox.click(alice, result, button(result, "Details")))
    assert "Vary (Region), custom mask" in str(details.embeds) and f"job {parent_id} · Vary (Region)" in str(
        details.embeds)

    # 🔄 makes another masked job from the stored mask, new seeds, same kept pixels.
    rerolled = await click_for_result(sandbox, alice, general, result, "🔄")
    _, again, images = await masked_images(bot, job_id_of(rerolled))
    assert again.mask == request.mask and again.seeds != request.seeds
    check_repainted(images, source, paint)


async def test_bad_masks_and_unseen_jobs_are_refused_and_store_nothing(sandbox: Sandbox,
                                                                       start_bot: Any) -> None:
    app = await start_bot(**DMS)
    alice, bob, general = sandbox.users["alice"], sandbox.users["bob"], sandbox.channel("general")
    single = await imagine(sandbox, alice, general, "a kite --seed 1 --steps 2 --n 1")
    job = str(job_id_of(single))
    size = image_of(single).size
    in_dm = job_id_of(await imagine(sandbox, alice, sandbox.dm_channel(alice), "a diary --steps 2 --n 1"))
    await settings(sandbox, alice, general, private=True)
    secret = await imagine(sandbox, alice, general, "a secret --steps 2 --n 1")
    private = job_id_of(secret)
    await settings(sandbox, alice, general, private=False)
    files, rows = blob_files(app), await job_rows(app, alice)

    refusals = [
        (alice, job, png(right_half((size[0], size[1] // 2))), "draw the mask at the image's shape"),
        (alice, job, b"GIF89a broken", "not an image I can read"),
        (alice, job, png(Image.new("L", size, 0)), "nothing to repaint"),
        (alice, job, png(Image.new("L", size, 255)), "covers the whole image"),
        (alice, job, b"\0" * (10 * 2**20 + 1), "too large"),
        (alice, "12.0", png(right_half(size)), "e.g. `12.3`"),
        (alice, f"{job_id_of(single) + 100}", png(right_half(size)), "does not exist here"),
    ]
    for who, target, data, words in refusals:
        refused = await answer(await region(sandbox, who, general, target, data))
        assert refused.ephemeral and words in refused.content, (words, refused.content)
    # Someone else's private job, and a DM's job (even for its owner, in a server): as a missing job.
    for who, target in ((bob, private), (alice, in_dm), (bob, in_dm)):
        refused = await answer(await region(sandbox, who, general, str(target), png(right_half(size))))
        assert does_not_exist(refused, target), refused.content
    assert blob_files(app) == files and await job_rows(app, alice) == rows
    assert await job_rows(app, bob) == []


async def test_a_masked_job_still_renders_after_a_restart_mid_render(sandbox: Sandbox, start_bot: Any,
                                                                     hold: Any) -> None:
    alice, general = sandbox.users["alice"], sandbox.channel("general")
    first = await start_bot()
    single = await imagine(sandbox, alice, general, "a meadow --seed 5 --steps 2 --n 1")
    source = image_of(single)
    w, h = source.size
    # A PNG with transparency: the transparent bottom half repaints (its colours say nothing).
    rgba = Image.new("RGBA", (w, h), (255, 255, 255, 255))
    rgba.paste((255, 255, 255, 0), (0, h // 2, w, h))
    hold.close()
    await region(sandbox, alice, general, str(job_id_of(single)), png(rgba), filename="erased.png", feather=4)
    assert await asyncio.to_thread(hold.holding.wait, 60)  # rendering, held
    await first.stop()
    hold.open()
    second = await start_bot()
    result = await sandbox.wait_for(
        lambda: next((m for m in results(sandbox, general) if m.id != single.id), None), timeout=120)
    _, request, images = await masked_images(second, job_id_of(result))
    assert request.mask is not None and request.feather == 4
    paint = np.zeros((h, w), bool)
    paint[h // 2 - 4:] = True  # the mask and its 4-pixel feather
    check_repainted(images, source, paint)
    src = np.asarray(source, np.int16)
    for px in images:  # the band fades: changed, but less than the mask itself
        band = np.abs(px[h // 2 - 4: h // 2] - src[h // 2 - 4: h // 2]).mean()
        assert 0 < band < np.abs(px[h // 2:] - src[h // 2:]).mean()


async def test_the_message_menu_takes_the_mask_a_member_posted(sandbox: Sandbox, bot: App) -> None:
    alice, bob, general = sandbox.users["alice"], sandbox.users["bob"], sandbox.channel("general")
    single = await imagine(sandbox, alice, general, "a lake --seed 8 --steps 2 --n 1")
    source = image_of(single)
    w, h = source.size
    job = job_id_of(single)
    # Bob posts a mask naming the job; the menu's modal is prefilled with it.
    posted = await sandbox.post_message(bob, general, f"repaint the right of {job}.1 please",
                                        attachments=[("mask.png", png(right_half((w, h))))])
    menu = await sandbox.message_command(bob, general, "Vary (Region) with this mask", posted)
    assert await menu.wait_ack() == 9 and menu.modal is not None
    assert f'"{job}.1"' in json.dumps(menu.modal)
    bad = await sandbox.submit_modal(bob, general, menu.modal["custom_id"],
                                     {"job": f"{job}.1", "prompt": "", "feather": "wide"})
    await bad.wait_ack()
    assert bad.original is not None and bad.original.ephemeral and "whole number" in bad.original.content
    before = {m.id for m in results(sandbox, general)}
    sent = await sandbox.submit_modal(bob, general, menu.modal["custom_id"],
                                      {"job": f"{job}.1", "prompt": "a frozen lake", "feather": ""})
    await sent.wait_ack()
    result = await sandbox.wait_for(
        lambda: next((m for m in results(sandbox, general) if m.id not in before), None), timeout=120)
    made, request, images = await masked_images(bot, job_id_of(result))
    assert made.user_id == bob.id and made.parent_job_id == job and request.prompt == "a frozen lake"
    check_repainted(images, source, np.asarray(right_half((w, h))) == 255)

    # A message with no image: a clear refusal.
    plain = await sandbox.post_message(bob, general, "no mask here")
    refused = await answer(await sandbox.message_command(bob, general, "Vary (Region) with this mask", plain))
    assert refused.ephemeral and "no mask image" in refused.content
