"""Server styles through the sandbox: /style save from uploads or a job (with a LoRA and a suffix),
`--style name` in a prompt renders exactly what the suffix and LoRA written out render, /style list's sheet
shows each style's samples, removal by the author or a moderator (audited), and the sample files outlive
blob sweeps while their style exists. Every refusal stores nothing."""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

from PIL import Image

from bot.app import App
from generation.request import RenderRequest
from generation.styles import sheet_box
from sandbox import Sandbox
from tests.bot.helpers import image_of, imagine, job_id_of
from tests.bot.test_loras import lora_bytes

RED, BLUE, GREEN = (220, 30, 30), (30, 40, 220), (30, 200, 60)


def png(colour: tuple[int, int, int], size: tuple[int, int] = (64, 64)) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", size, colour).save(buf, format="PNG")
    return buf.getvalue()


async def style(sandbox: Sandbox, user: Any, sub: str, options: dict[str, Any] | None = None,
                **images: bytes) -> Any:
    """Run /style <sub>; returns the bot's answer (response or the followup after a deferral)."""
    attachments = {name: (f"{name}.png", data) for name, data in images.items()}
    interaction = await sandbox.slash(user, sandbox.channel("general"), "style", options or {},
                                      subcommand=sub, attachments=attachments or None)
    await interaction.wait_ack()

    def answered() -> Any:
        if interaction.followups:
            return interaction.followups[-1]
        original = interaction.original
        return original if original is not None and (original.content or original.attachments) else None

    return await sandbox.wait_for(answered, timeout=60)


async def styles_and_blobs(app: App, guild_id: int) -> tuple[list[Any], set[str]]:
    assert app.services is not None
    files = {p.name for p in app.services.blobs.root.rglob("*") if p.is_file()}
    return await app.services.db.styles.list(guild_id), files


async def test_a_style_with_a_lora_and_suffix_renders_as_if_written_out_and_refusals_store_nothing(
        sandbox: Sandbox, start_bot: Any, tmp_path: Path, tiny_data_dir: Path) -> None:
    library = tmp_path / "loras"
    (library / "sd15").mkdir(parents=True)
    (library / "sd15" / "ink.safetensors").write_bytes(lora_bytes(tmp_path, tiny_data_dir))
    app: App = await start_bot(own_engine=True, ATELIER_LORA_DIR=str(library))
    assert app.services is not None
    db, gid = app.services.db, sandbox.guild.id
    alice, bob, mod, general = sandbox.users["alice"], sandbox.users["bob"], sandbox.users["mod"], \
        sandbox.channel("general")

    saved = await style(sandbox, alice, "save", {"name": "Ink-Wash", "lora": "ink", "weight": 0.8,
                                                 "suffix": "inked lines,  sepia wash"},
                        image1=png(RED), image2=png(BLUE, (96, 64)))
    assert saved.ephemeral and "Saved style `ink-wash`" in saved.content
    assert "--style ink-wash" in saved.content
    [row] = await db.styles.list(gid)
    assert (row.user_id, row.lora, row.lora_weight) == (alice.id, "ink", 0.8)
    assert row.suffix == "inked lines, sepia wash"
    assert [app.services.blobs.open_image(k).getpixel((5, 5)) for k in row.images] == [RED, BLUE]

    # Refusals: a taken name (any case), a bad name, an unknown LoRA, a suffix with flags, no samples, too
    # many samples (a 4-image job + 2), a banned member. Nothing is stored.
    grid = await imagine(sandbox, bob, general, "a grid --steps 2 --n 4")
    before = await styles_and_blobs(app, gid)
    for options, images, expected in [
        ({"name": "INK-wash"}, {"image1": png(RED)}, "already has a style `ink-wash`"),
        ({"name": "x"}, {"image1": png(RED)}, "2-32 characters"),
        ({"name": "other", "lora": "nope"}, {"image1": png(RED)}, "no LoRA `nope`"),
        ({"name": "other", "suffix": "moody --ar 16:9"}, {"image1": png(RED)}, "no `--flags`"),
        ({"name": "other"}, {}, "needs sample images"),
        ({"name": "other", "job": job_id_of(grid)}, {"image1": png(RED), "image2": png(BLUE)}, "at most 5"),
    ]:
        refused = await style(sandbox, bob, "save", options, **images)
        assert refused.ephemeral and expected in refused.content, (options, refused.content)
    await db.moderation.ban(gid, bob.id, reason="spam")
    refused = await style(sandbox, bob, "save", {"name": "other"}, image1=png(GREEN))
    assert refused.ephemeral and "banned" in refused.content
    assert await styles_and_blobs(app, gid) == before

    # --style: the same pixels as the suffix and LoRA written out; the job keeps the expanded prompt.
    styled = await imagine(sandbox, alice, general, "a red boat --style ink-wash --steps 2 --seed 3 --n 1")
    written = await imagine(sandbox, alice, general,
                            "a red boat, inked lines, sepia wash --lora ink:0.8 --steps 2 --seed 3 --n 1")
    plain = await imagine(sandbox, alice, general, "a red boat --steps 2 --seed 3 --n 1")
    job = await db.jobs.get(job_id_of(styled))
    assert job is not None
    request = RenderRequest.from_json(job.request)
    assert (request.prompt, request.loras) == ("a red boat, inked lines, sepia wash", (("ink", 0.8),))
    assert image_of(styled).tobytes() == image_of(written).tobytes() != image_of(plain).tobytes()
    unknown = await sandbox.slash(alice, general, "imagine", {"prompt": "a boat --style nope"})
    await unknown.wait_ack()
    assert unknown.original.ephemeral and "no style `nope`" in unknown.original.content

    # Removal: not by another member; by a moderator, audited.
    await db.moderation.unban(gid, bob.id)
    refused = await style(sandbox, bob, "remove", {"name": "ink-wash"})
    assert refused.ephemeral and "author or a moderator" in refused.content and await db.styles.list(gid)
    removed = await style(sandbox, mod, "remove", {"name": "ink-wash"})
    assert "Removed style `ink-wash`" in removed.content and await db.styles.list(gid) == []
    actions = [(e.action, e.actor_id, e.target) for e in await db.audit.list(gid)]
    assert ("style.save", alice.id, "ink-wash") in actions and ("style.remove", mod.id, "ink-wash") in actions


async def test_style_list_sheet_shows_each_styles_samples_and_sweeps_keep_them(
        sandbox: Sandbox, bot: App) -> None:
    assert bot.services is not None
    db, gid = bot.services.db, sandbox.guild.id
    alice, bob, general = sandbox.users["alice"], sandbox.users["bob"], sandbox.channel("general")
    empty = await style(sandbox, alice, "list")
    assert empty.ephemeral and "no styles yet" in empty.content
    # A style from a job another member made (public) plus an upload, and one from an upload alone.
    grid = await imagine(sandbox, alice, general, "dusk --steps 2 --n 2")
    job_blobs = [row.blob for row in await db.images.for_job(job_id_of(grid))]
    saved = await style(sandbox, bob, "save", {"name": "dusk", "job": job_id_of(grid)}, image1=png(GREEN))
    assert "Saved style `dusk`" in saved.content
    await style(sandbox, alice, "save", {"name": "sea", "suffix": "seascape"}, image1=png(BLUE, (64, 128)))
    dusk, sea = await db.styles.list(gid)
    assert dusk.images[:2] == tuple(job_blobs) and len(dusk.images) == 3

    listed = await style(sandbox, alice, "list")
    assert listed.ephemeral and "`dusk` by" in listed.content and "`sea` by" in listed.content
    sheet = Image.open(io.BytesIO(listed.attachments[0].data)).convert("RGB")

    def centre(row: int, slot: int) -> tuple[int, int, int]:
        x0, y0, x1, y1 = sheet_box(row, slot)
        return sheet.getpixel(((x0 + x1) // 2, (y0 + y1) // 2))  # type: ignore[return-value]

    def near(a: tuple[int, int, int], b: tuple[int, int, int]) -> bool:
        return max(abs(x - y) for x, y in zip(a, b, strict=True)) <= 3

    assert near(centre(0, 2), GREEN) and near(centre(1, 0), BLUE)
    assert not near(centre(0, 0), GREEN) and not near(centre(1, 1), BLUE)  # sea has one sample

    # A sweep with no grace keeps every sample while its style exists; removing the style frees them.
    await db.images.delete_job_images(job_id_of(grid))
    await bot.services.collect_blobs(grace_s=-60)
    assert all(bot.services.blobs.exists(key) for key in (*dusk.images, *sea.images))
    await style(sandbox, alice, "remove", {"name": "sea"})
    await bot.services.collect_blobs(grace_s=-60)
    assert not bot.services.blobs.exists(sea.images[0])
    assert all(bot.services.blobs.exists(key) for key in dusk.images)


async def test_sref_at_name_takes_the_styles_first_sample(sandbox: Sandbox, start_bot: Any,
                                                          tiny_data_dir: Path) -> None:
    from generation.tiny import IP_ADAPTER_FOLDER, ensure_tiny_model
    from tests.bot.test_references import diff
    from tests.bot.test_references import png as patterned

    adapter = ensure_tiny_model(tiny_data_dir) / IP_ADAPTER_FOLDER
    app: App = await start_bot(own_engine=True, ATELIER_MODELS=f"ref=tiny?ip_adapter={adapter},plain=tiny")
    assert app.services is not None
    alice, general = sandbox.users["alice"], sandbox.channel("general")
    red = patterned((220, 30, 30))
    await style(sandbox, alice, "save", {"name": "redstyle"}, image1=red, image2=patterned((30, 40, 220)))
    prompt = "a lighthouse --steps 2 --seed 3 --n 1"
    by_name = await imagine(sandbox, alice, general, f"{prompt} --sref @redstyle")
    interaction = await sandbox.slash(alice, general, "imagine", {"prompt": prompt},
                                      attachments={"reference": ("red.png", red)})
    await interaction.wait_ack()
    by_file = await sandbox.wait_for(lambda: next((m for m in sandbox.messages(general) if m.attachments
                                                   and f"job `{job_id_of(by_name) + 1}`" in m.content
                                                   and m.buttons()), None), timeout=120)
    plain = await imagine(sandbox, alice, general, prompt)
    assert diff(image_of(by_name), image_of(by_file)) == 0 and diff(image_of(by_name), image_of(plain)) > 10
    unknown = await sandbox.slash(alice, general, "imagine", {"prompt": f"{prompt} --sref @nope"})
    await unknown.wait_ack()
    assert unknown.original.ephemeral and "no style `@nope`" in unknown.original.content
