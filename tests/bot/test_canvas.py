"""Canvas buttons (Zoom Out, Custom Zoom, Make Square, Pan) clicked as members click them: each makes a new
grid whose images keep the source's pixels exactly and paint the new border."""

from __future__ import annotations

import io
from typing import Any

import numpy as np
from PIL import Image

from bot.app import App
from generation.canvas import canvas_inputs
from generation.request import Kind, RenderRequest
from sandbox import Sandbox
from tests.bot.helpers import button, click_for_result, image_of, imagine, job_id_of, labels, results


async def _request(app: App, job_id: int) -> tuple[Any, RenderRequest]:
    assert app.services is not None
    job = await app.services.db.jobs.get(job_id)
    assert job is not None
    return job, RenderRequest.from_json(job.request)


async def _images(app: App, job_id: int) -> list[Image.Image]:
    assert app.services is not None
    rows = sorted(await app.services.db.images.for_job(job_id), key=lambda r: r.index)
    return [Image.open(io.BytesIO(app.services.blobs.read(r.blob))).convert("RGB") for r in rows]


async def _check_canvas(app: App, result: Any, parent_id: int, source: Image.Image,
                        size: tuple[int, int]) -> None:
    """The result is a grid of 4 canvas images of `size`, each with the source's pixels in its box and a
    painted border, and the parent recorded."""
    job, request = await _request(app, job_id_of(result))
    assert request.kind == Kind.CANVAS and job.parent_job_id == parent_id and job.parent_index == 0
    assert (request.width, request.height) == size
    assert labels(result)[:4] == ["U1", "U2", "U3", "U4"]  # the full button set of a grid
    x, y, w, h = request.box  # type: ignore[misc]
    laid, mask = canvas_inputs(request, source)
    border = np.asarray(mask) == 255
    images = await _images(app, job.id)
    assert len(images) == 4
    for image in images:
        assert image.size == size
        px = np.asarray(image, np.int16)
        assert (px[y:y + h, x:x + w] == np.asarray(source, np.int16)).all()
        assert np.abs(px[border] - np.asarray(laid, np.int16)[border]).max() > 10


async def test_zoom_out_and_pan_paint_around_the_kept_source(sandbox: Sandbox, bot: App) -> None:
    alice, bob, general = sandbox.users["alice"], sandbox.users["bob"], sandbox.channel("general")
    single = await imagine(sandbox, alice, general, "a lighthouse --seed 9 --steps 3 --n 1")
    parent_id = job_id_of(single)
    source = image_of(single)
    w, h = source.size
    names = labels(single)
    for name in ("Zoom Out 2x", "Zoom Out 1.5x", "Custom Zoom", "⬅️", "➡️", "⬆️", "⬇️"):
        assert name in names
    assert "Make Square" not in names  # a square image

    zoomed = await click_for_result(sandbox, bob, general, single, "Zoom Out 2x")
    await _check_canvas(bot, zoomed, parent_id, source, (2 * w, 2 * h))
    assert f"<@{bob.id}>" in zoomed.content  # the clicker owns the new job
    zoomed = await click_for_result(sandbox, alice, general, single, "Zoom Out 1.5x")
    await _check_canvas(bot, zoomed, parent_id, source, (w * 3 // 2, h * 3 // 2))
    for arrow, size in (("⬅️", (w * 3 // 2, h)), ("➡️", (w * 3 // 2, h)), ("⬆️", (w, h * 3 // 2)),
                        ("⬇️", (w, h * 3 // 2))):
        panned = await click_for_result(sandbox, alice, general, single, arrow)
        await _check_canvas(bot, panned, parent_id, source, size)


async def test_make_square_and_custom_zoom(sandbox: Sandbox, bot: App) -> None:
    alice, general = sandbox.users["alice"], sandbox.channel("general")
    wide = await imagine(sandbox, alice, general, "a harbour --seed 2 --steps 3 --n 1 --ar 3:2")
    source = image_of(wide)
    w, h = source.size
    assert w > h
    squared = await click_for_result(sandbox, alice, general, wide, "Make Square")
    await _check_canvas(bot, squared, job_id_of(wide), source, (w, w))

    # Custom Zoom: a modal with the prompt, the zoom and a new aspect.
    click = await sandbox.click(alice, wide, button(wide, "Custom Zoom"))
    assert await click.wait_ack() == 9 and click.modal is not None and "a harbour" in str(click.modal)
    before = {m.id for m in sandbox.messages(general)}
    bad = await sandbox.submit_modal(alice, general, click.modal["custom_id"],
                                     {"prompt": "a harbour", "zoom": "3", "aspect": ""}, message=wide)
    await bad.wait_ack()
    assert bad.original is not None and bad.original.ephemeral
    assert "Zoom goes from 1 to 2" in bad.original.content
    assert bot.services is not None and await bot.services.db.jobs.get(job_id_of(wide) + 2) is None

    good = await sandbox.submit_modal(alice, general, click.modal["custom_id"],
                                      {"prompt": "a harbour at night", "zoom": "1.5", "aspect": "1:1"},
                                      message=wide)
    await good.wait_ack()

    def zoomed() -> Any:
        return next((m for m in results(sandbox, general)
                     if m.id not in before and "harbour at night" in m.content), None)

    result = await sandbox.wait_for(zoomed, timeout=120)
    _, request = await _request(bot, job_id_of(result))
    assert request.prompt == "a harbour at night"
    # 1.5x of the 3:2 source, grown to 1:1: the long side 1.5x, the canvas square.
    assert request.width == request.height and abs(request.width - 1.5 * w) <= 8
    await _check_canvas(bot, result, job_id_of(wide), source, (request.width, request.height))


def _cell(message: Any, op: str) -> str:
    """The custom_id of the editor control `op` (t0..t15, inv, clr, go, mix) as the message now shows it."""
    found = [b["custom_id"] for b in message.buttons() if str(b["custom_id"]).endswith(f":{op}")]
    assert len(found) == 1, (op, found)
    return str(found[0])


def _selected(message: Any) -> set[int]:
    return {int(str(b["custom_id"]).rsplit(":t", 1)[1]) for b in message.buttons()
            if ":t" in str(b["custom_id"]) and b["label"] == "■"}


async def test_vary_region_editor_survives_a_restart_and_repaints_only_the_cells(
        sandbox: Sandbox, start_bot: Any) -> None:
    alice, general = sandbox.users["alice"], sandbox.channel("general")
    first = await start_bot()
    single = await imagine(sandbox, alice, general, "a meadow --seed 4 --steps 3 --n 1")
    source = image_of(single)
    opened = await sandbox.click(alice, single, button(single, "Vary (Region)"))
    await opened.wait_ack()
    editor = opened.original
    assert editor is not None and editor.ephemeral and editor.flags & (1 << 15)  # Components V2
    assert _selected(editor) == set() and editor.attachments
    thumb_before = editor.attachments[0].data

    # Toggle two cells: the editor redraws, the thumbnail shows the selection.
    for cell in (0, 1):
        click = await sandbox.click(alice, editor, _cell(editor, f"t{cell}"))
        await click.wait_ack()
    assert _selected(editor) == {0, 1} and editor.attachments[0].data != thumb_before

    # The bot restarts mid-selection; the editor keeps working: a preset, a toggle, Invert, Submit.
    await first.stop()
    second = await start_bot()
    picked = await sandbox.select(alice, editor, f"atelier:rgp:{job_id_of(single)}:0", ["right half"])
    await picked.wait_ack()
    assert _selected(editor) == {2, 3, 6, 7, 10, 11, 14, 15}
    click = await sandbox.click(alice, editor, _cell(editor, "t15"))  # off again
    await click.wait_ack()
    for op in ("inv", "inv"):  # twice: back to the same selection
        click = await sandbox.click(alice, editor, _cell(editor, op))
        await click.wait_ack()
    cells = _selected(editor)
    assert cells == {2, 3, 6, 7, 10, 11, 14}

    before = {m.id for m in results(sandbox, general)}
    submit = await sandbox.click(alice, editor, _cell(editor, "go"))
    await submit.wait_ack()
    result = await sandbox.wait_for(
        lambda: next((m for m in results(sandbox, general) if m.id not in before), None), timeout=120)
    job, request = await _request(second, job_id_of(result))
    assert request.kind == Kind.CANVAS and request.cells == sum(1 << c for c in cells)
    assert job.parent_job_id == job_id_of(single)
    chosen = np.asarray(canvas_inputs(request, source)[1]) == 255
    for image in await _images(second, job.id):
        px, src = np.asarray(image, np.int16), np.asarray(source, np.int16)
        assert (px[~chosen] == src[~chosen]).all()
        assert np.abs(px[chosen] - src[chosen]).max() > 10

    # 🖋: the same region with a new prompt, from a modal.
    mix = await sandbox.click(alice, editor, _cell(editor, "mix"))
    assert await mix.wait_ack() == 9 and mix.modal is not None and "a meadow" in str(mix.modal)
    before = {m.id for m in results(sandbox, general)}
    sent = await sandbox.submit_modal(alice, general, mix.modal["custom_id"],
                                      {"prompt": "a meadow of poppies"})
    await sent.wait_ack()
    remixed = await sandbox.wait_for(
        lambda: next((m for m in results(sandbox, general) if m.id not in before), None), timeout=120)
    _, again = await _request(second, job_id_of(remixed))
    assert again.prompt == "a meadow of poppies" and again.cells == request.cells

    # Clear leaves nothing to submit: Submit is disabled.
    click = await sandbox.click(alice, editor, _cell(editor, "clr"))
    await click.wait_ack()
    assert next(b for b in editor.buttons() if str(b["custom_id"]).endswith(":go"))["disabled"]
