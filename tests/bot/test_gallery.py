"""/gallery, /export, ⭐, 🗑 and "Imagine from this image" through the sandbox.

Galleries with many images are seeded through storage (real SQLite rows, real PNG blobs, a distinct
colour per image so the contact sheet's pixels say which image sits in which cell); the ⭐ on a result
and the context menu run real renders with the tiny model."""

from __future__ import annotations

import csv
import io
import json
from typing import Any

from PIL import Image

from bot.app import App
from generation.request import RenderRequest
from generation.sheets import PLACEHOLDER, cell_box, contact_sheet
from sandbox import Sandbox
from storage.images import NewImage
from tests.bot.helpers import button, imagine, job_id_of


def colour(n: int) -> tuple[int, int, int]:
    return (40 + (n * 53) % 200, 40 + (n * 97) % 200, 40 + (n * 31) % 200)


async def seed(app: App, user: Any, guild_id: int, prompts: list[str], *, private: bool = False,
               start: int = 0) -> list[int]:
    """One finished single-image job per prompt, oldest first; returns the image ids."""
    assert app.services is not None
    db, blobs = app.services.db, app.services.blobs
    ids = []
    for i, prompt in enumerate(prompts):
        request = RenderRequest(prompt=prompt, model="tiny", width=64, height=64, steps=2, guidance=5.0,
                                sampler="euler", seeds=(1000 + start + i,))
        job = await db.jobs.create(user_id=user.id, guild_id=guild_id, channel_id=None, kind="txt2img",
                                   request=request.to_json(), batch_key="seed", private=private)
        buf = io.BytesIO()
        Image.new("RGB", (64, 64), colour(start + i)).save(buf, format="PNG")
        key = blobs.put(buf.getvalue())
        _, rows = await db.jobs.complete(job.id, [NewImage(0, 1000 + start + i, key, 64, 64)])
        await db.jobs.mark_delivered(job.id)
        ids.append(rows[0].id)
    return ids


async def deferred_reply(sandbox: Sandbox, member: Any, channel: Any, command: str, /,
                         **options: Any) -> Any:
    """The ephemeral answer to a command that defers first (/gallery, /export)."""
    interaction = await sandbox.slash(member, channel, command, options)
    await interaction.wait_ack()
    await sandbox.wait_for(lambda: interaction.followups, timeout=30)
    message = interaction.followups[0]
    assert message.ephemeral
    return message


async def open_gallery(sandbox: Sandbox, viewer: Any, channel: Any, **options: Any) -> Any:
    return await deferred_reply(sandbox, viewer, channel, "gallery", **options)


def select_values(message: Any) -> list[int]:
    return [int(o["value"]) for row in message.components for c in row.get("components", [])
            for o in c.get("options", [])]


def select_id(message: Any) -> str:
    for row in message.components:
        for c in row.get("components", []):
            if c.get("type") == 3:
                return str(c["custom_id"])
    raise AssertionError("no select on the gallery page")


def sheet(message: Any) -> Image.Image:
    return Image.open(io.BytesIO(message.attachments[0].data)).convert("RGB")


def cell_colour(image: Image.Image, slot: int) -> tuple[int, ...]:
    x0, y0, x1, y1 = cell_box(slot)
    return tuple(image.getpixel(((x0 + x1) // 2, (y0 + y1) // 2)))  # type: ignore[arg-type]


def close(a: tuple[int, ...], b: tuple[int, ...]) -> bool:
    return all(abs(x - y) <= 10 for x, y in zip(a, b, strict=True))  # thumbnails are JPEG


async def turn(sandbox: Sandbox, user: Any, page: Any, label: str) -> Any:
    click = await sandbox.click(user, page, button(page, label))
    assert await click.wait_ack() == 7  # the same ephemeral message is updated in place
    return sandbox.message(page.id)


async def test_paging_search_and_favourites_across_many_images(sandbox: Sandbox, bot: App) -> None:
    assert bot.services is not None
    alice, general = sandbox.users["alice"], sandbox.channel("general")
    prompts = [f"a {'cat' if i % 2 else 'dog'} number {i}" for i in range(20)]
    ids = await seed(bot, alice, sandbox.guild.id, prompts)
    newest_first = ids[::-1]

    page = await open_gallery(sandbox, alice, general)
    assert "page 1/3" in page.content and "20 images" in page.content
    assert select_values(page) == newest_first[:9]
    image = sheet(page)
    for slot in range(9):  # newest first: cell 0 holds image 19
        assert close(cell_colour(image, slot), colour(19 - slot)), slot
    assert [b["disabled"] for b in page.buttons()] == [True, False]

    page = await turn(sandbox, alice, page, "▶")
    assert "page 2/3" in page.content and select_values(page) == newest_first[9:18]
    page = await turn(sandbox, alice, page, "▶")
    assert "page 3/3" in page.content and select_values(page) == newest_first[18:]
    assert [b["disabled"] for b in page.buttons()] == [False, True]
    assert close(cell_colour(sheet(page), 1), colour(0))
    page = await turn(sandbox, alice, page, "◀")
    assert "page 2/3" in page.content

    # Search uses the prompt index: 10 dogs, newest first, over two pages (the search survives paging).
    dogs = await open_gallery(sandbox, alice, general, search="dog")
    assert "10 images" in dogs.content and "page 1/2" in dogs.content
    assert select_values(dogs) == [i for i, p in zip(ids, prompts, strict=True) if "dog" in p][::-1][:9]
    dogs = await turn(sandbox, alice, dogs, "▶")
    assert "page 2/2" in dogs.content and len(select_values(dogs)) == 1
    none = await open_gallery(sandbox, alice, general, search="giraffe")
    assert "No images" in none.content and not none.attachments

    # Open an image from the select, then ⭐ it: it is the only favourite.
    chosen = newest_first[3]
    opened = await sandbox.select(alice, page, select_id(page), [str(newest_first[12])])
    await opened.wait_ack()
    shown = opened.original
    assert shown is not None and shown.ephemeral and "number 7" in shown.content
    assert {"Upscale", "Vary (Subtle)", "Vary (Strong)", "🔄", "🖋", "Details", "⭐", "🗑️"} <= {
        b["label"] or (b["emoji"] or {}).get("name") for b in shown.buttons()}
    page1 = await open_gallery(sandbox, alice, general)
    opened = await sandbox.select(alice, page1, select_id(page1), [str(chosen)])
    await opened.wait_ack()
    star = await sandbox.click(alice, opened.original, button(opened.original, "⭐"))
    await star.wait_ack()
    assert "added to your favourites" in star.original.content
    favs = await open_gallery(sandbox, alice, general, favourites=True)
    assert "1 image," in favs.content and select_values(favs) == [chosen]
    # ⭐ again removes it.
    star = await sandbox.click(alice, opened.original, button(opened.original, "⭐"))
    await star.wait_ack()
    assert "removed from" in star.original.content
    favs = await open_gallery(sandbox, alice, general, favourites=True)
    assert "No images" in favs.content and not favs.attachments


async def test_privacy_across_members_and_guilds(sandbox: Sandbox, bot: App) -> None:
    assert bot.services is not None
    alice, bob, general = sandbox.users["alice"], sandbox.users["bob"], sandbox.channel("general")
    public = await seed(bot, alice, sandbox.guild.id, ["a public lake", "a public hill"])
    private = await seed(bot, alice, sandbox.guild.id, ["a private diary"], private=True, start=2)
    other_guild = sandbox.add_guild("Elsewhere")
    await seed(bot, alice, other_guild.id, ["a lake elsewhere"], start=3)

    mine = await open_gallery(sandbox, alice, general)
    assert "3 images" in mine.content and set(select_values(mine)) == {*public, *private}
    theirs = await open_gallery(sandbox, bob, general, user=alice)
    assert "2 images" in theirs.content and set(select_values(theirs)) == set(public)
    found = await open_gallery(sandbox, bob, general, user=alice, search="lake")
    assert select_values(found) == [public[0]]
    found = await open_gallery(sandbox, bob, general, user=alice, search="diary")
    assert not found.attachments
    # A forged select value naming the private image is refused.
    forged = await sandbox.select(bob, theirs, select_id(theirs), [str(private[0])])
    await forged.wait_ack()
    assert forged.original.ephemeral and "not available" in forged.original.content
    assert not forged.original.attachments

    # 🗑 on alice's image: refused for bob, allowed for alice.
    opened = await sandbox.select(bob, theirs, select_id(theirs), [str(public[1])])
    await opened.wait_ack()
    denied = await sandbox.click(bob, opened.original, button(opened.original, "🗑️"))
    await denied.wait_ack()
    assert "Only the image's owner or a moderator" in denied.original.content
    assert (await bot.services.db.images.get(public[1])).deleted is False  # type: ignore[union-attr]
    opened = await sandbox.select(alice, mine, select_id(mine), [str(public[1])])
    await opened.wait_ack()
    gone = await sandbox.click(alice, opened.original, button(opened.original, "🗑️"))
    await gone.wait_ack()
    assert (await bot.services.db.images.get(public[1])).deleted is True  # type: ignore[union-attr]
    assert "Deleted" in sandbox.message(opened.original.id).content
    theirs = await open_gallery(sandbox, bob, general, user=alice)
    assert select_values(theirs) == [public[0]]

    # A moderator may delete it, and that is audited.
    opened = await sandbox.select(sandbox.users["mod"], theirs, select_id(theirs), [str(public[0])])
    await opened.wait_ack()
    removed = await sandbox.click(sandbox.users["mod"], opened.original, button(opened.original, "🗑️"))
    await removed.wait_ack()
    entry = (await bot.services.db.audit.list(sandbox.guild.id, limit=1))[0]
    assert entry.action == "image.delete" and entry.details["owner"] == alice.id


async def test_export_holds_exactly_the_users_own_rows(sandbox: Sandbox, bot: App) -> None:
    alice, bob, general = sandbox.users["alice"], sandbox.users["bob"], sandbox.channel("general")
    await seed(bot, alice, sandbox.guild.id, ["alice one", "alice two", "alice three"])
    await seed(bot, bob, sandbox.guild.id, ["bob one"], start=3)
    await seed(bot, alice, sandbox.add_guild("Other").id, ["alice elsewhere"], start=4)

    message = await export(sandbox, alice, general)
    assert "Capped" not in message.content
    rows = list(csv.DictReader(io.StringIO(message.attachments[0].data.decode())))
    assert [r["prompt"] for r in rows] == ["alice one", "alice two", "alice three"]
    assert [int(r["seed"]) for r in rows] == [1000, 1001, 1002]
    assert {"job_id", "seed", "prompt", "negative", "model", "steps", "guidance", "sampler"} <= set(rows[0])

    data = json.loads((await export(sandbox, bob, general, format="json")).attachments[0].data)
    assert [(r["prompt"], r["seed"]) for r in data] == [("bob one", 1003)]
    nothing = await export(sandbox, sandbox.users["mod"], general)
    assert "no images here" in nothing.content and not nothing.attachments


async def export(sandbox: Sandbox, user: Any, channel: Any, **options: Any) -> Any:
    return await deferred_reply(sandbox, user, channel, "export", **options)


async def test_export_is_capped_at_the_newest_rows_and_says_so(sandbox: Sandbox, bot: App,
                                                               monkeypatch: Any) -> None:
    import bot.extensions.gallery as gallery
    import storage.gallery

    assert bot.services is not None
    alice, general = sandbox.users["alice"], sandbox.channel("general")
    await seed(bot, alice, sandbox.guild.id, [f"prompt {i}" for i in range(10)])
    monkeypatch.setattr(gallery, "EXPORT_MAX_ROWS", 4)
    monkeypatch.setattr(storage.gallery, "EXPORT_CHUNK", 3)  # rows arrive over several chunks
    for format in ("csv", "json"):
        message = await export(sandbox, alice, general, format=format)
        assert "4 images" in message.content and "Capped" in message.content, message.content
        data = message.attachments[0].data
        rows = json.loads(data) if format == "json" else list(csv.DictReader(io.StringIO(data.decode())))
        assert [r["prompt"] for r in rows] == ["prompt 6", "prompt 7", "prompt 8", "prompt 9"]
    # The byte cap (the server's upload limit) keeps the newest rows that fit, whole.
    monkeypatch.setattr(gallery, "EXPORT_MAX_ROWS", 100)
    full, count, capped = await gallery.build_export(bot.services.db.gallery, sandbox.guild.id, alice.id,
                                                     "json", max_bytes=10**6)
    assert (count, capped) == (10, False)
    small, count, capped = await gallery.build_export(bot.services.db.gallery, sandbox.guild.id, alice.id,
                                                      "json", max_bytes=len(full) // 2)
    assert capped and 0 < count < 10 and len(small) <= len(full) // 2
    assert [r["prompt"] for r in json.loads(small)] == [f"prompt {i}" for i in range(10 - count, 10)]


async def test_missing_or_damaged_image_files_show_as_placeholders(sandbox: Sandbox, bot: App) -> None:
    assert bot.services is not None
    db, blobs = bot.services.db, bot.services.blobs
    alice, general = sandbox.users["alice"], sandbox.channel("general")
    ids = await seed(bot, alice, sandbox.guild.id, [f"picture {i}" for i in range(9)])
    newest_first = ids[::-1]
    damaged, missing = newest_first[2], newest_first[6]
    for image_id, damage in ((damaged, b"\x89PNG\r\n\x1a\n this is not an image"), (missing, None)):
        row = await db.images.get(image_id)
        assert row is not None
        if damage is None:
            blobs.path(row.blob).unlink()
        else:
            blobs.path(row.blob).write_bytes(damage)

    page = await open_gallery(sandbox, alice, general)
    assert "9 images" in page.content and select_values(page) == newest_first
    image = sheet(page)
    assert image.size == contact_sheet([None] * 9).size  # a whole 3x3 sheet
    for slot in range(9):
        expected = PLACEHOLDER if slot in (2, 6) else colour(8 - slot)
        assert close(cell_colour(image, slot), expected), slot

    for image_id in (damaged, missing):
        opened = await sandbox.select(alice, page, select_id(page), [str(image_id)])
        await opened.wait_ack()
        assert opened.original.ephemeral and not opened.original.attachments
        assert "missing or damaged" in opened.original.content
    fine = await sandbox.select(alice, page, select_id(page), [str(newest_first[0])])
    await fine.wait_ack()
    assert fine.original.attachments


async def test_star_on_a_result_and_imagine_from_this_image(sandbox: Sandbox, bot: App) -> None:
    assert bot.services is not None
    alice, bob, general = sandbox.users["alice"], sandbox.users["bob"], sandbox.channel("general")
    result = await imagine(sandbox, alice, general, "a copper kettle --steps 2 --n 2 --seed 3")
    job_id = job_id_of(result)

    # Stars are per member: bob stars alice's public result into *his* favourites.
    bobs = await sandbox.click(bob, result, button(result, "⭐"))
    await bobs.wait_ack()
    assert bobs.original.ephemeral and f"Job {job_id} added to your favourites" in bobs.original.content
    assert not any(r.favourite for r in await bot.services.db.images.for_job(job_id))  # not alice's star
    favs = await open_gallery(sandbox, bob, general, favourites=True)
    assert "your favourites" in favs.content and "2 images," in favs.content
    assert "No images" in (await open_gallery(sandbox, alice, general, favourites=True)).content
    star = await sandbox.click(alice, result, button(result, "⭐"))
    await star.wait_ack()
    assert f"Job {job_id} added" in star.original.content
    assert all(r.favourite for r in await bot.services.db.images.for_job(job_id))
    # Looking at alice's gallery, bob can narrow it to what he starred.
    hers = await open_gallery(sandbox, bob, general, user=alice, favourites=True)
    assert "that you starred" in hers.content and "2 images," in hers.content
    # Once the job is private (as with alice's private mode) it is gone for bob: no star, and out of
    # the favourites he already had.
    await bot.services.db.connection.write("UPDATE jobs SET private = 1 WHERE id = ?", (job_id,))
    refused = await sandbox.click(bob, result, button(result, "⭐"))
    await refused.wait_ack()
    assert refused.original.ephemeral and "does not exist" in refused.original.content
    assert "No images" in (await open_gallery(sandbox, bob, general, favourites=True)).content
    await bot.services.db.connection.write("UPDATE jobs SET private = 0 WHERE id = ?", (job_id,))

    # The context menu on the result: a modal prefilled with the job's prompt, then an img2img job
    # from the result's image, owned by the member who used the menu.
    menu = await sandbox.message_command(bob, general, "Imagine from this image", result)
    assert await menu.wait_ack() == 9
    assert menu.modal is not None and "a copper kettle" in json.dumps(menu.modal)
    before = {m.id for m in sandbox.messages(general)}
    submit = await sandbox.submit_modal(bob, general, menu.modal["custom_id"],
                                        {"prompt": "a silver kettle --steps 2", "strength": "0.5"})
    await submit.wait_ack()

    def new_result() -> Any:
        for m in sandbox.messages(general):
            if m.id not in before and "job `" in m.content and m.attachments and m.buttons():
                return m
        return None

    made = await sandbox.wait_for(new_result, timeout=120)
    job = await bot.services.db.jobs.get(job_id_of(made))
    assert job is not None and job.user_id == bob.id and job.kind == "img2img"
    request = RenderRequest.from_json(job.request)
    assert request.prompt == "a silver kettle" and request.strength == 0.5 and request.source

    # A message without an image gets a clear refusal.
    plain = await sandbox.post_message(alice, general, "just words")
    refused = await sandbox.message_command(alice, general, "Imagine from this image", plain)
    await refused.wait_ack()
    assert refused.original.ephemeral and "no image" in refused.original.content


async def test_flagged_images_are_blurred_and_spoilered_outside_age_restricted_channels(
        sandbox: Sandbox, bot: App) -> None:
    assert bot.services is not None
    db, blobs = bot.services.db, bot.services.blobs
    alice = sandbox.users["alice"]
    request = RenderRequest(prompt="a chequered cloth", model="tiny", width=64, height=64, steps=2,
                            guidance=5.0, sampler="euler", seeds=(1,))
    job = await db.jobs.create(user_id=alice.id, guild_id=sandbox.guild.id, kind="txt2img",
                               request=request.to_json(), batch_key="seed")
    board = Image.new("RGB", (256, 256), (0, 0, 0))
    for y in range(0, 256, 16):
        for x in range((y // 16) % 2 * 16, 256, 32):
            board.paste((255, 255, 255), (x, y, x + 16, y + 16))
    buf = io.BytesIO()
    board.save(buf, format="PNG")
    _, rows = await db.jobs.complete(job.id, [NewImage(0, 1, blobs.put(buf.getvalue()), 256, 256, nsfw=True)])

    def spread(page: Any) -> int:
        x0, y0, x1, y1 = cell_box(0)
        cell = sheet(page).crop((x0 + 60, y0 + 60, x1 - 60, y1 - 60)).convert("L")
        lo, hi = cell.getextrema()  # type: ignore[misc]
        return int(hi) - int(lo)

    general, nsfw = sandbox.channel("general"), sandbox.channel("nsfw-art")
    hidden = await open_gallery(sandbox, alice, general)
    shown = await open_gallery(sandbox, alice, nsfw)
    assert spread(hidden) < 60 < 200 < spread(shown)  # blurred to grey vs a sharp chequerboard

    opened = await sandbox.select(alice, hidden, select_id(hidden), [str(rows[0].id)])
    await opened.wait_ack()
    assert opened.original.attachments[0].filename.startswith("SPOILER_")
    opened = await sandbox.select(alice, shown, select_id(shown), [str(rows[0].id)])
    await opened.wait_ack()
    assert not opened.original.attachments[0].filename.startswith("SPOILER_")
