"""The buttons under a result, clicked the way members click them, through the sandbox."""

from __future__ import annotations

from typing import Any

import numpy as np

from bot.app import App
from generation.request import Kind, RenderRequest
from sandbox import Sandbox
from tests.bot.helpers import button, click_for_result, image_of, imagine, job_id_of, labels


async def request_of(app: App, job_id: int) -> RenderRequest:
    assert app.services is not None
    job = await app.services.db.jobs.get(job_id)
    assert job is not None
    return RenderRequest.from_json(job.request)


async def test_upscale_variation_reroll_and_remix(sandbox: Sandbox, bot: App) -> None:
    alice, bob, general = sandbox.users["alice"], sandbox.users["bob"], sandbox.channel("general")
    grid = await imagine(sandbox, alice, general, "a red fox in snow --seed 100 --steps 4 --n 4")
    parent_id = job_id_of(grid)
    parent = await request_of(bot, parent_id)
    assert parent.seeds == (100, 101, 102, 103)

    # U2: a 2x upscale of image 2, with image 2's seed; the clicker (bob) owns the new job.
    upscaled = await click_for_result(sandbox, bob, general, grid, "U2")
    up = await request_of(bot, job_id_of(upscaled))
    assert up.kind == Kind.UPSCALE and up.seeds == (101,)
    assert image_of(upscaled).size == (2 * parent.width, 2 * parent.height)
    assert f"<@{bob.id}>" in upscaled.content
    # Upscaled results keep the vary buttons but cannot be upscaled again.
    assert "Vary (Subtle)" in labels(upscaled) and "Upscale" not in labels(upscaled)

    # V3: a variation of image 3 (a single image with its own buttons).
    varied = await click_for_result(sandbox, alice, general, grid, "V3")
    assert bot.services is not None
    job = await bot.services.db.jobs.get(job_id_of(varied))
    assert job is not None and job.parent_job_id == parent_id and job.parent_index == 2
    assert (await request_of(bot, job.id)).kind == Kind.VARIATION
    assert labels(varied)[:3] == ["Upscale", "Vary (Subtle)", "Vary (Strong)"]

    # 🔄: same prompt, new seeds.
    rerolled = await click_for_result(sandbox, alice, general, grid, "🔄")
    again = await request_of(bot, job_id_of(rerolled))
    assert again.prompt == parent.prompt and again.count == 4 and again.seeds != parent.seeds

    # 🖋: the modal comes prefilled with the prompt; its submission runs the edited prompt.
    click = await sandbox.click(alice, grid, button(grid, "🖋"))
    assert await click.wait_ack() == 9
    assert click.modal is not None and "a red fox in snow" in str(click.modal)
    before = {m.id for m in sandbox.messages(general)}
    submitted = await sandbox.submit_modal(alice, general, click.modal["custom_id"],
                                           {"prompt": "a blue fox in snow --steps 4", "negative": ""},
                                           message=grid)
    await submitted.wait_ack()

    def remixed() -> Any:
        return next((m for m in sandbox.messages(general)
                     if m.id not in before and "blue fox" in m.content and m.attachments), None)

    await sandbox.wait_for(remixed, timeout=120)


async def test_subtle_variation_starts_from_the_clicked_image(sandbox: Sandbox, bot: App) -> None:
    # (The tiny model's random VAE cannot reconstruct a source, so pixel closeness is checked in the
    # engine tests as dependence on the source; here: the right stored image, the right strength.)
    alice, general = sandbox.users["alice"], sandbox.channel("general")
    single = await imagine(sandbox, alice, general, "a castle --seed 5 --steps 4 --n 1")
    varied = await click_for_result(sandbox, alice, general, single, "Vary (Subtle)")
    assert bot.services is not None
    [source] = await bot.services.db.images.for_job(job_id_of(single))
    request = await request_of(bot, job_id_of(varied))
    assert request.kind == Kind.VARIATION and request.source == source.blob
    assert request.strength is not None and 0.2 <= request.strength <= 0.5
    assert request.seeds != (5,)  # a fresh seed
    # The stored source is exactly the image the member saw.
    assert bot.services.blobs.read(source.blob) == single.attachments[0].data
    varied_px, single_px = (np.asarray(image_of(m), np.float32) for m in (varied, single))
    assert np.abs(varied_px - single_px).mean() > 1


async def test_details_delete_and_autocomplete(sandbox: Sandbox, bot: App) -> None:
    alice, bob, mod = sandbox.users["alice"], sandbox.users["bob"], sandbox.users["mod"]
    general = sandbox.channel("general")
    long_prompt = "a quiet harbour" + ", small boats with `red` sails" * 20  # ~600 characters
    grid = await imagine(sandbox, alice, general, f"{long_prompt} --seed 42 --steps 3 --n 2")
    assert long_prompt not in grid.content  # results show it shortened

    details = await sandbox.click(bob, grid, button(grid, "Details"))
    await details.wait_ack()
    shown = details.original
    assert shown is not None and shown.ephemeral
    [embed] = shown.embeds
    assert embed["description"] == f"```\n{long_prompt}\n```"  # whole, ready to copy
    text = str(shown.embeds)
    assert "42, 43" in text and "tiny" in text

    refused = await sandbox.click(bob, grid, button(grid, "🗑️"))
    await refused.wait_ack()
    assert refused.original is not None and refused.original.ephemeral
    assert "owner or a moderator" in refused.original.content
    assert any(m.id == grid.id for m in sandbox.messages(general))

    allowed = await sandbox.click(mod, grid, button(grid, "🗑️"))
    await allowed.wait_ack()
    await sandbox.wait_for(lambda: all(m.id != grid.id for m in sandbox.messages(general)), timeout=10)
    assert bot.services is not None
    assert await bot.services.db.images.for_job(job_id_of(grid)) == []

    choices = await sandbox.autocomplete(alice, general, "imagine", {"prompt": "x", "model": "ti"},
                                         focused="model")
    assert "tiny" in [c["value"] for c in choices]
    choices = await sandbox.autocomplete(alice, general, "imagine", {"prompt": "x", "model": "XL"},
                                         focused="model")
    assert [c["value"] for c in choices] == ["tiny-xl"]


async def test_buttons_work_after_a_restart(sandbox: Sandbox, start_bot: Any) -> None:
    alice, general = sandbox.users["alice"], sandbox.channel("general")
    first = await start_bot()
    grid = await imagine(sandbox, alice, general, "an old mill --seed 3 --steps 3 --n 2")
    await first.stop()

    second = await start_bot()
    upscaled = await click_for_result(sandbox, alice, general, grid, "U1")
    up = await request_of(second, job_id_of(upscaled))
    assert up.kind == Kind.UPSCALE and up.seeds == (3,)


async def test_queue_lists_positions_and_its_cancel_button_cancels(sandbox: Sandbox, bot: App) -> None:
    """/queue: my jobs in the fair order with their positions; its Cancel button ends one job and
    the job's own message says so. Nobody else may cancel it."""
    assert bot.services is not None
    alice, bob, general = sandbox.users["alice"], sandbox.users["bob"], sandbox.channel("general")
    await bot.services.scheduler.pause()
    ids = []
    for user, prompt in [(alice, "first owl"), (alice, "second owl"), (bob, "bob's owl")]:
        it = await sandbox.slash(user, general, "imagine", {"prompt": f"{prompt} --steps 2 --n 1"})
        await it.wait_ack()
        ids.append((await bot.services.db.jobs.list_for_user(user.id, limit=1))[0].id)
    first, second, bobs = ids

    listing = await sandbox.slash(alice, general, "queue")
    await listing.wait_ack()
    shown = listing.original
    assert shown is not None and shown.ephemeral
    lines = shown.content.splitlines()
    # Round robin: alice's first, then bob's, then alice's second.
    assert f"`{first}` **first owl** — position 1" in lines[0]
    assert f"`{second}` **second owl** — position 3" in lines[1]
    assert "bob's owl" not in shown.content
    assert labels(shown) == [f"Cancel {first}", f"Cancel {second}"]

    denied = await sandbox.click(bob, shown, button(shown, f"Cancel {second}"))
    await denied.wait_ack()
    assert denied.original is not None and "owner or a moderator" in denied.original.content
    assert (await bot.services.db.jobs.get(second)).status == "queued"  # type: ignore[union-attr]

    done = await sandbox.click(alice, shown, button(shown, f"Cancel {second}"))
    await done.wait_ack()
    assert done.original is not None and done.original.ephemeral
    assert done.original.content == f"Job {second} cancelled."
    assert (await bot.services.db.jobs.get(second)).status == "cancelled"  # type: ignore[union-attr]
    await sandbox.wait_for(lambda: any("second owl" in m.content and "(cancelled)" in m.content
                                       for m in sandbox.messages(general)), timeout=10)
    assert [e.job_id for e in bot.services.scheduler.snapshot()] == [first, bobs]
    await bot.services.scheduler.resume()


async def test_custom_ids_of_older_messages_still_work(sandbox: Sandbox, bot: App) -> None:
    """Buttons posted before the action table became classes keep working: the gallery's old 🗑 ("rm")
    is the one delete now, and an action that no longer exists says so."""
    from tests.bot.test_gallery import open_gallery, seed, select_id

    assert bot.services is not None
    alice, general = sandbox.users["alice"], sandbox.channel("general")
    [kept, old] = await seed(bot, alice, sandbox.guild.id, ["an old harbour", "an old bridge"])
    page = await open_gallery(sandbox, alice, general)
    opened = await sandbox.select(alice, page, select_id(page), [str(old)])
    await opened.wait_ack()
    row = await bot.services.db.images.get(old)
    assert row is not None
    # Today's 🗑 is spelled "delete"; the same image's button as older gallery messages carry it:
    assert button(opened.original, "🗑️") == f"atelier:delete:{row.job_id}:{row.index}"
    clicked = await sandbox.click_crafted(alice, opened.original, f"atelier:rm:{row.job_id}:{row.index}")
    await clicked.wait_ack()
    assert (await bot.services.db.images.get(old)).deleted is True  # type: ignore[union-attr]
    assert (await bot.services.db.images.get(kept)).deleted is False  # type: ignore[union-attr]
    # (A crafted click carries its own copy of the message: the edit lands on that copy.)
    assert clicked.original is not None and clicked.original.content == "Deleted."

    retired = await sandbox.click_crafted(alice, page, f"atelier:zap:{row.job_id}")
    await retired.wait_ack()
    assert retired.original is not None and retired.original.ephemeral
    assert "no longer supported" in retired.original.content
