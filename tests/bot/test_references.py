"""Image references through the sandbox: `/imagine reference:` and `--sref` / `--cref` with a Discord link
or a job of ours; the reference shows in Details and the PNG; a bad, huge or NSFW image, a link to another
host and a model without an IP-Adapter are refused ephemerally and leave nothing behind."""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

from PIL import Image

from bot.app import App
from generation.references import NOT_CONFIGURED
from generation.tiny import IP_ADAPTER_FOLDER, ensure_tiny_model
from sandbox import Sandbox
from tests.bot.helpers import _new_result, button, image_of, imagine, job_id_of, results
from tests.bot.test_admin import refused
from tests.generation.test_uploads import png_claiming


def png(color: tuple[int, int, int], size: int = 48) -> bytes:
    image = Image.new("RGB", (size, size), color)
    for x in range(0, size, 6):
        image.putpixel((x, x), (255 - color[0], 255 - color[1], 255 - color[2]))
    buf = io.BytesIO()
    image.save(buf, format="PNG")
    return buf.getvalue()


def prompt_input(modal: dict[str, Any]) -> str:
    """The prefilled value of a modal's `prompt` text input (in an action row or a label)."""
    stack = list(modal.get("components", []))
    while stack:
        item = stack.pop()
        if item.get("type") == 4 and item.get("custom_id") == "prompt":
            return str(item.get("value") or "")
        stack.extend(item.get("components", []))
        if isinstance(item.get("component"), dict):
            stack.append(item["component"])
    raise AssertionError("no prompt input")


def diff(a: Image.Image, b: Image.Image) -> int:
    import numpy as np

    return int(np.abs(np.asarray(a, dtype=np.int16) - np.asarray(b, dtype=np.int16)).max())


async def test_references_from_an_attachment_a_link_and_a_job_and_every_refusal(
        sandbox: Sandbox, start_bot: Any, tiny_data_dir: Path) -> None:
    adapter = ensure_tiny_model(tiny_data_dir) / IP_ADAPTER_FOLDER
    bot: App = await start_bot(own_engine=True, ATELIER_MODELS=f"ref=tiny?ip_adapter={adapter},plain=tiny")
    assert bot.services is not None
    alice, general = sandbox.users["alice"], sandbox.channel("general")
    prompt = "a lighthouse --steps 2 --seed 3 --n 1"

    plain = await imagine(sandbox, alice, general, prompt)
    red = png((220, 30, 30))
    before = {m.id for m in results(sandbox, general)}
    started = await sandbox.slash(alice, general, "imagine", {"prompt": prompt},
                                  attachments={"reference": ("red.png", red)})
    await started.wait_ack()
    styled = await _new_result(sandbox, general, before, 120)
    assert diff(image_of(plain), image_of(styled)) > 10
    # Details and the PNG name the reference by its hash.
    details = await sandbox.click(alice, styled, button(styled, "Details"))
    await details.wait_ack()
    assert details.original is not None and "--sref " in str(details.original.embeds)
    with Image.open(io.BytesIO(styled.attachments[0].data)) as image:
        assert 'Image references: "--sref ' in image.text["parameters"]
        assert '"references": [["style", ' in image.text["atelier"]

    # That result as a reference, by the link Discord shows for it and by its job number: one image, so the
    # same pixels whichever way it is named.
    by_link = await imagine(sandbox, alice, general, f"{prompt} --sref {styled.attachments[0].url}")
    by_job = await imagine(sandbox, alice, general, f"{prompt} --sref {job_id_of(styled)}.1")
    assert diff(image_of(by_link), image_of(by_job)) == 0
    assert diff(image_of(by_link), image_of(plain)) > 10
    # A character reference weighs differently from a style one.
    cref = await imagine(sandbox, alice, general, f"{prompt} --cref {job_id_of(styled)} --cw 50")
    assert diff(image_of(cref), image_of(by_job)) > 0

    # Refusals: ephemeral, clear, no job, no stored file.
    blobs = bot.services.blobs
    files = sorted(p for p in blobs.root.rglob("*") if p.is_file())
    count = len(results(sandbox, general))

    async def refusal(text: str, reference: tuple[str, bytes] | None = None) -> str:
        files = {"reference": reference} if reference else None
        interaction = await sandbox.slash(alice, general, "imagine", {"prompt": text}, attachments=files)
        await interaction.wait_ack()
        return await refused(interaction)

    assert "too large" in await refusal(prompt, ("huge.png", png_claiming(30000, 30000)))
    assert "not an image I can read" in await refusal(prompt, ("junk.png", b"not an image"))
    assert "NSFW" in await refusal(prompt, ("skin.png", png((224, 172, 138))))
    assert "Discord image link" in await refusal(f"{prompt} --sref https://example.com/attachments/1/2/a.png")
    assert NOT_CONFIGURED in await refusal(f"{prompt} --model plain", ("red.png", red))
    assert "--sw" in await refusal(f"{prompt} --sw 50")
    assert "0 to 100" in await refusal(f"{prompt} --cref {job_id_of(styled)} --cw 500")
    assert "does not exist" in await refusal(f"{prompt} --sref 99999")
    assert len(results(sandbox, general)) == count
    assert sorted(p for p in blobs.root.rglob("*") if p.is_file()) == files


async def test_blend_the_style_reference_menu_and_remix(sandbox: Sandbox, start_bot: Any,
                                                       tiny_data_dir: Path) -> None:
    adapter = ensure_tiny_model(tiny_data_dir) / IP_ADAPTER_FOLDER
    bot: App = await start_bot(own_engine=True, ATELIER_MODELS=f"ref=tiny?ip_adapter={adapter},plain=tiny")
    assert bot.services is not None
    alice, bob, general = sandbox.users["alice"], sandbox.users["bob"], sandbox.channel("general")
    red, blue = png((220, 30, 30)), png((20, 40, 230))

    async def blend(files: dict[str, tuple[str, bytes]], **options: Any) -> Any:
        interaction = await sandbox.slash(alice, general, "blend", options, attachments=files)
        await interaction.wait_ack()
        return interaction

    # Two images and an aspect: a grid of four at 3:2 with every button, its image prompt the two images.
    before = {m.id for m in results(sandbox, general)}
    await blend({"image1": ("red.png", red), "image2": ("blue.png", blue)}, aspect="3:2",
                prompt="--steps 2 --seed 5")
    grid = await _new_result(sandbox, general, before, 120)
    for label in ("U1", "U4", "V1", "V4"):
        assert button(grid, label)
    job = await bot.services.db.jobs.get(job_id_of(grid))
    assert job is not None
    request = job.request
    assert len(request["seeds"]) == 4 and request["width"] > request["height"]
    assert [ref[0] for ref in request["references"]] == ["image", "image"]
    # A blend of other images renders other pixels (same seed, aspect and steps).
    before = {m.id for m in results(sandbox, general)}
    await blend({"image1": ("red.png", red), "image2": ("red2.png", png((200, 60, 10)))}, aspect="3:2",
                prompt="--steps 2 --seed 5")
    other = await _new_result(sandbox, general, before, 120)
    assert diff(image_of(grid), image_of(other)) > 10
    # Refused: the model without an adapter; a broken image. No job.
    count = len(results(sandbox, general))
    refusal = await blend({"image1": ("red.png", red), "image2": ("blue.png", blue)}, model="plain")
    assert NOT_CONFIGURED in await refused(refusal)
    refusal = await blend({"image1": ("red.png", red), "image2": ("junk.png", b"junk")})
    assert "not an image I can read" in await refused(refusal)
    assert len(results(sandbox, general)) == count

    # "Use as style reference" on a one-image result: the modal names that job's image; submitted, a job
    # whose reference is that image.
    single = await imagine(sandbox, alice, general, "a boat --steps 2 --seed 1 --n 1")
    menu = await sandbox.message_command(alice, general, "Use as style reference", single)
    assert await menu.wait_ack() == 9 and menu.modal is not None
    prefilled = prompt_input(menu.modal)
    assert prefilled.strip() == f"--sref {job_id_of(single)}.1"
    before = {m.id for m in results(sandbox, general)}
    submit = await sandbox.submit_modal(alice, general, menu.modal["custom_id"],
                                        {"prompt": f"a tower --steps 2 --seed 1 --n 1 {prefilled}"})
    await submit.wait_ack()
    styled = await _new_result(sandbox, general, before, 120)
    styled_job = await bot.services.db.jobs.get(job_id_of(styled))
    assert styled_job is not None and styled_job.request["references"][0][0] == "style"
    # On a member's own message: its attachment, by link.
    posted = await sandbox.post_message(bob, general, "my drawing", attachments=[("mine.png", blue)])
    menu = await sandbox.message_command(bob, general, "Use as style reference", posted)
    await menu.wait_ack()
    assert menu.modal is not None
    assert posted.attachments[0].url in prompt_input(menu.modal)

    # Remix keeps the parent's references when the edited prompt names none.
    remix = await sandbox.click(alice, styled, button(styled, "🖋"))
    await remix.wait_ack()
    assert remix.modal is not None
    before = {m.id for m in results(sandbox, general)}
    submit = await sandbox.submit_modal(alice, general, remix.modal["custom_id"],
                                        {"prompt": "a castle --n 1"})
    await submit.wait_ack()
    remixed = await _new_result(sandbox, general, before, 120)
    remixed_job = await bot.services.db.jobs.get(job_id_of(remixed))
    assert remixed_job is not None and remixed_job.request["references"] == styled_job.request["references"]
