"""The LoRA library through the sandbox: a moderator adds, lists and removes files with /admin lora; members
use them with `--lora` / `<lora:>` and see them in Details and in the PNG's A1111 parameters."""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

from PIL import Image

from bot.app import App
from generation.loras import write_random_lora
from sandbox import Sandbox
from tests.bot.helpers import button, imagine, results
from tests.bot.test_admin import admin, refused


def lora_bytes(tmp_path: Path, data_dir: Path) -> bytes:
    from diffusers import StableDiffusionPipeline

    from generation.tiny import ensure_tiny_model

    pipe = StableDiffusionPipeline.from_pretrained(ensure_tiny_model(data_dir), local_files_only=True)
    return write_random_lora(pipe, tmp_path / "made" / "ink.safetensors", seed=1).read_bytes()


async def test_admin_lora_add_use_details_png_and_remove(sandbox: Sandbox, start_bot: Any, tmp_path: Path,
                                                        tiny_data_dir: Path) -> None:
    library = tmp_path / "loras"
    bot: App = await start_bot(own_engine=True, ATELIER_LORA_DIR=str(library))
    assert bot.services is not None
    alice, mod, general = sandbox.users["alice"], sandbox.users["mod"], sandbox.channel("general")
    data = lora_bytes(tmp_path, tiny_data_dir)

    async def add(user: Any, filename: str, payload: bytes, **options: Any) -> Any:
        interaction = await sandbox.slash(user, general, "admin", options, subcommand="add", group="lora",
                                          attachments={"file": (filename, payload)})
        await interaction.wait_ack()
        if interaction.response_type == 5:  # deferred: the answer is a followup
            await sandbox.wait_for(lambda: interaction.followups, timeout=30)
        return interaction

    # Refused: a member; a pickle; a file that is not safetensors at all. Nothing lands in the library.
    assert "Manage Server" in await refused(await add(alice, "ink.safetensors", data, family="sd15"))
    assert ".safetensors" in await refused(await add(mod, "ink.ckpt", data, family="sd15"))
    assert "not a readable" in await refused(await add(mod, "junk.safetensors", b"not a tensor file"))
    assert not list(library.rglob("*.safetensors"))

    added = await refused(await add(mod, "ink.safetensors", data, family="sd15"))
    assert "Added lora `ink`" in added and "--lora ink:0.8" in added
    assert (library / "sd15" / "ink.safetensors").read_bytes() == data
    listed = await admin(sandbox, mod, general, "list", group="lora")
    assert listed.ephemeral and "`ink` — lora, SD 1" in listed.content

    # Autocomplete shows names with their kind and family.
    choices = await sandbox.autocomplete(mod, general, "admin", {"name": "in"}, "name", subcommand="remove",
                                         group="lora")
    assert choices == [{"name": "ink (lora, SD 1.x)", "value": "ink"}]

    # A member uses it (A1111 syntax); Details and the PNG's parameters list it with its hash.
    result = await imagine(sandbox, alice, general, "a red boat <lora:ink:0.8> --steps 2 --seed 3")
    details = await sandbox.click(alice, result, button(result, "Details"))
    await details.wait_ack()
    assert details.original is not None and "<lora:ink:0.8>" in str(details.original.embeds)
    with Image.open(io.BytesIO(result.attachments[0].data)) as png:
        parameters = png.text["parameters"]
    short_hash = bot.services.registry.loras.get("ink").short_hash  # type: ignore[union-attr]
    assert parameters.startswith("a red boat <lora:ink:0.8>\n")
    assert f'Lora hashes: "ink: {short_hash}"' in parameters
    # The LoRA changed the picture: the same job without it differs.
    plain = await imagine(sandbox, alice, general, "a red boat --steps 2 --seed 3")
    assert plain.attachments[0].data != result.attachments[0].data

    # A typo gets the close name, ephemerally, and queues nothing.
    jobs = len(results(sandbox, general))
    text = await refused(await sandbox.slash(alice, general, "imagine", {"prompt": "a boat --lora inkk"}))
    assert "Unknown LoRA `inkk`" in text and "Did you mean `ink`" in text
    assert len(results(sandbox, general)) == jobs

    removed = await admin(sandbox, mod, general, "remove", {"name": "ink"}, group="lora")
    assert removed.ephemeral and "Removed `ink`" in removed.content
    assert not (library / "sd15" / "ink.safetensors").exists()
    text = await refused(await sandbox.slash(alice, general, "imagine", {"prompt": "a boat --lora ink"}))
    assert "Unknown LoRA `ink`" in text
    audit = [(e.action, e.target) for e in await bot.services.db.audit.list(sandbox.guild.id, limit=10)]
    assert ("lora.add", "ink") in audit and ("lora.remove", "ink") in audit
