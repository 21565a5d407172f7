"""/lineage through the sandbox: the chain of parents with the action that made each job, the tree of what
was made from it, and bot/access.py's rule: a job the viewer may not see is never named (a hidden
ancestor is "…", a hidden child is left out, a hidden job itself does not exist)."""

from __future__ import annotations

import asyncio
import io
from typing import Any

import numpy as np
from PIL import Image

from bot.app import App
from bot.results import result_png
from bot.settings_keys import MEMBER
from generation.lineage import CELL, FRAMES_PER_STEP, GAP, LABEL, fit, thumbnail_box
from sandbox import Sandbox
from tests.bot.helpers import button, click_for_result, imagine, job_id_of, labels


async def _lineage(sandbox: Sandbox, user: Any, job: int) -> str:
    interaction = await sandbox.slash(user, sandbox.channel("general"), "lineage", {"job": job})
    await interaction.wait_ack()
    assert interaction.original is not None and interaction.original.ephemeral
    return str(interaction.original.content)


async def _details(sandbox: Sandbox, user: Any, message: Any, custom_id: str) -> str:
    interaction = await sandbox.click_crafted(user, message, custom_id)
    await interaction.wait_ack()
    assert interaction.original is not None and interaction.original.ephemeral
    return str(interaction.original.embeds)


async def _newest(app: App, user: Any) -> int:
    assert app.services is not None
    return (await app.services.db.jobs.list_for_user(user.id, limit=1))[0].id


async def test_lineage_names_each_step_and_only_what_the_viewer_may_see(sandbox: Sandbox, bot: App) -> None:
    assert bot.services is not None
    db = bot.services.db
    alice, bob, general = sandbox.users["alice"], sandbox.users["bob"], sandbox.channel("general")
    await MEMBER.set(db, alice.id, {"count": 1})
    grid = await imagine(sandbox, alice, general, "a kite --steps 1 --n 2 --seed 1")
    g = job_id_of(grid)
    upscaled = await click_for_result(sandbox, alice, general, grid, "U2")
    u = job_id_of(upscaled)
    await bot.services.scheduler.pause()  # the rest only needs the jobs' rows
    try:
        await (await sandbox.click(alice, upscaled, button(upscaled, "Zoom Out 2x"))).wait_ack()
        z = await _newest(bot, alice)
        await (await sandbox.click(alice, grid, button(grid, "🔄"))).wait_ack()
        r = await _newest(bot, alice)
        # Bob, in private mode, varies alice's grid; out of private mode he rerolls his private variation.
        await MEMBER.set(db, bob.id, {"private": True})
        await (await sandbox.click(bob, grid, button(grid, "V1"))).wait_ack()
        v = await _newest(bot, bob)
        await MEMBER.set(db, bob.id, {"private": False})
        await (await sandbox.click_crafted(bob, grid, f"atelier:reroll:{v}")).wait_ack()
        w = await _newest(bot, bob)
        assert len({g, u, z, r, v, w}) == 6

        shown = await _lineage(sandbox, alice, u)
        assert f"#{g} /imagine → **#{u} U2**" in shown and f"• #{z} Zoom Out 2x" in shown

        shown = await _lineage(sandbox, alice, g)
        assert f"**#{g} /imagine**" in shown
        assert f"\n• #{u} U2\n  • #{z} Zoom Out 2x\n• #{r} 🔄" in shown
        assert f"#{v}" not in shown and f"#{w}" not in shown  # bob's private job and all below it

        shown = await _lineage(sandbox, bob, g)
        assert f"• #{v} V1\n  • #{w} 🔄" in shown
        assert f"#{g} /imagine → **#{v} V1**" in await _lineage(sandbox, bob, v)

        shown = await _lineage(sandbox, alice, w)
        assert f"… → **#{w} 🔄**" in shown and f"#{v}" not in shown and f"#{g}" not in shown
        assert f"Job {v} does not exist" in await _lineage(sandbox, alice, v)

        # Details names the parent and the action that made the job, never a parent hidden from the viewer.
        assert f"job {g} · U2" in await _details(sandbox, alice, upscaled, f"atelier:info:{u}")
        assert f"job {u} · Zoom Out 2x" in await _details(sandbox, alice, upscaled, f"atelier:info:{z}")
        assert f"job {v} · 🔄" in await _details(sandbox, bob, grid, f"atelier:info:{w}")
        hidden = await _details(sandbox, alice, grid, f"atelier:info:{w}")
        assert "a job not shown here" in hidden and f"job {v}" not in hidden
        assert "Made from" not in await _details(sandbox, alice, grid, f"atelier:info:{g}")
    finally:
        await bot.services.scheduler.cancel_all()
        await bot.services.scheduler.resume()

TOLERANCE = 16  # mean absolute difference per channel, out of 255


async def _image(app: App, job_id: int, index: int) -> Image.Image:
    assert app.services is not None
    row = await app.services.db.images.get_by_index(job_id, index)
    assert row is not None
    return app.services.blobs.open_image(row.blob).convert("RGB")


def _diff(frame: Image.Image, image: Image.Image) -> float:
    """Mean difference of the two pictures' 32x32 averages: what a lossy frame keeps of a noisy image."""
    small = [np.asarray(im.resize((32, 32), Image.Resampling.BOX), np.float32) for im in (frame, image)]
    return float(np.abs(small[0] - small[1]).mean())


def _sheet_of(message: Any) -> Image.Image:
    [attachment] = message.attachments
    return Image.open(io.BytesIO(attachment.data)).convert("RGB")


async def _picture(app: App, job_id: int) -> np.ndarray:
    """What the job's cell should show: its result (grid or image) scaled into a cell."""
    assert app.services is not None
    png = await result_png(app.services, job_id)
    return np.asarray(fit(Image.open(io.BytesIO(png))), np.float32)


def _cell(sheet: Image.Image, slot: tuple[int, int]) -> np.ndarray:
    return np.asarray(sheet.crop(thumbnail_box(*slot)), np.float32)


async def _assert_drawn(app: App, sheet: Image.Image, where: dict[int, tuple[int, int]],
                        others: list[int]) -> None:
    """Each job's picture is in its slot (closer to it than to any other job's picture), and no picture of
    `others` is anywhere on the sheet."""
    pictures = {j: await _picture(app, j) for j in [*where, *others]}
    for job, slot in where.items():
        cell = _cell(sheet, slot)
        own = float(np.abs(cell - pictures[job]).mean())
        # The cell went through the stored JPEG thumbnail: a noisy tiny-model picture keeps some of the noise.
        assert own < TOLERANCE, (job, own)
        assert all(1.5 * own < float(np.abs(cell - p).mean()) for j, p in pictures.items() if j != job)
    columns, rows = 1 + max(c for c, _ in where.values()), 1 + max(r for _, r in where.values())
    assert sheet.size == (GAP + columns * (CELL + GAP), GAP + rows * (CELL + LABEL + GAP))
    for job in others:
        assert all(float(np.abs(_cell(sheet, s) - pictures[job]).mean()) > TOLERANCE for s in where.values())


async def test_lineage_draws_the_visible_family_and_opens_any_node_after_a_restart(
        sandbox: Sandbox, start_bot: Any) -> None:
    """The sheet holds each visible job's picture where the tree puts it (parents left, later siblings
    below), a private job of another member is neither drawn nor offered, and the menu opens a node with
    its buttons, ephemeral, after a restart, through the same access rule as /job. A Zoom Out's lineage
    exports the zoom as an animated WebP from its source image out to it."""
    first = await start_bot()
    assert first.services is not None
    alice, bob, general = sandbox.users["alice"], sandbox.users["bob"], sandbox.channel("general")
    await MEMBER.set(first.services.db, alice.id, {"count": 1})
    grid = await imagine(sandbox, alice, general, "a kite --steps 1 --n 2 --seed 5")
    g = job_id_of(grid)
    upscaled = await click_for_result(sandbox, alice, general, grid, "U1")
    u = job_id_of(upscaled)
    z = job_id_of(await click_for_result(sandbox, alice, general, upscaled, "Zoom Out 2x"))
    u2 = job_id_of(await click_for_result(sandbox, alice, general, grid, "U2"))
    await MEMBER.set(first.services.db, bob.id, {"private": True})
    await (await sandbox.click(bob, grid, button(grid, "V1"))).wait_ack()
    v = (await first.services.db.jobs.list_for_user(bob.id, limit=1))[0].id
    await _wait_done(first, v)

    shown = await _lineage_message(sandbox, alice, g)
    await _assert_drawn(first, _sheet_of(shown), {g: (0, 0), u: (1, 0), z: (2, 0), u2: (1, 1)}, [v])
    [menu] = [c for row in shown.components for c in row["components"] if c["type"] == 3]
    assert [o["value"] for o in menu["options"]] == [str(g), str(u), str(z), str(u2)]
    assert [o["label"] for o in menu["options"]][1:3] == [f"#{u} U1", f"#{z} Zoom Out 2x"]
    # Bob may see his private variation: it is drawn for him, under alice's upscales.
    await _assert_drawn(first, _sheet_of(await _lineage_message(sandbox, bob, g)),
                        {g: (0, 0), u: (1, 0), z: (2, 0), u2: (1, 1), v: (1, 2)}, [])
    # From the middle of the family: the parent on the left, the zoom on the right, no sibling.
    await _assert_drawn(first, _sheet_of(await _lineage_message(sandbox, alice, u)),
                        {g: (0, 0), u: (1, 0), z: (2, 0)}, [u2, v])
    # The zoom's own lineage offers the infinite zoom; the grid's (no Zoom Out above it) does not.
    assert "Infinite zoom" not in labels(shown)
    zoomed = await _lineage_message(sandbox, alice, z)
    inner, outer = await _image(first, u, 0), await _image(first, z, 0)
    await first.stop()

    await start_bot()
    sent = await sandbox.click(alice, zoomed, button(zoomed, "Infinite zoom"))
    await sandbox.wait_for(lambda: sent.followups, timeout=60)
    [answer] = sent.followups
    assert answer.ephemeral and f"from job {u} outwards" in answer.content
    [attachment] = answer.attachments
    assert attachment.filename == f"zoom_{z}.webp"
    with Image.open(io.BytesIO(attachment.data)) as webp:
        assert webp.format == "WEBP" and webp.is_animated and webp.n_frames == FRAMES_PER_STEP + 1
        frames = []
        for i in (0, webp.n_frames - 1):
            webp.seek(i)
            frames.append(webp.convert("RGB"))
    # Lossy frames of noisy tiny-model images, compared by their 32x32 averages (out of 255): each end is
    # close to its own image and at least twice as far from the other one.
    assert _diff(frames[0], inner) < 4 < 2 * 4 < _diff(frames[0], outer)
    assert _diff(frames[1], outer) < 4 < 2 * 4 < _diff(frames[1], inner)
    # A job with no Zoom Out above it: a short ephemeral refusal, nothing drawn.
    refused = await sandbox.click_crafted(alice, zoomed, f"atelier:lineage:zoom:{u}")
    await refused.wait_ack()
    assert refused.original is not None and refused.original.ephemeral
    assert refused.original.content == f"Job {u} was not made by a Zoom Out."
    assert not refused.original.attachments
    opened = await sandbox.select(alice, shown, menu["custom_id"], [str(u2)])
    await opened.wait_ack()
    assert opened.original is not None and opened.original.ephemeral
    assert f"job `{u2}`" in opened.original.content and opened.original.attachments
    assert "Details" in labels(opened.original) and "Zoom Out 2x" in labels(opened.original)
    forged = await sandbox.select(alice, shown, menu["custom_id"], [str(v)])
    await forged.wait_ack()
    assert forged.original is not None and f"Job {v} does not exist" in forged.original.content


async def _lineage_message(sandbox: Sandbox, user: Any, job: int) -> Any:
    interaction = await sandbox.slash(user, sandbox.channel("general"), "lineage", {"job": job})
    await interaction.wait_ack()
    assert interaction.original is not None and interaction.original.ephemeral
    return interaction.original



async def _wait_done(app: App, job_id: int) -> None:
    assert app.services is not None
    for _ in range(1200):
        job = await app.services.db.jobs.get(job_id)
        if job is not None and job.status == "done":
            return
        await asyncio.sleep(0.1)
    raise AssertionError(f"job {job_id} did not finish")
