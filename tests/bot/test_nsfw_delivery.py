"""The NSFW policy applied to delivered results, through the sandbox: spoilered under `spoiler`, shown
plainly in an age-restricted channel, and a private job stays invisible to others in /job. Images are
judged by the model's checker, or by the standalone ATELIER_SAFETY_CHECKER for models without one."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from bot.app import App
from generation.tiny import write_tiny_safety_checker
from sandbox import Sandbox
from tests.bot.helpers import imagine, job_id_of
from tests.bot.test_admin import admin
from tests.bot.test_user_settings import settings


async def test_spoiler_mode_spoilers_nsfw_results_only(sandbox: Sandbox, bot: App) -> None:
    mod, alice, general = sandbox.users["mod"], sandbox.users["alice"], sandbox.channel("general")
    await admin(sandbox, mod, general, "nsfw", {"mode": "spoiler"})
    spicy = await imagine(sandbox, alice, general, "a nude statue --steps 2 --n 1")
    assert spicy.attachments[0].filename.startswith("SPOILER_")
    calm = await imagine(sandbox, alice, general, "a calm lake --steps 2 --n 1")
    assert not calm.attachments[0].filename.startswith("SPOILER_")
    # Age-restricted channels show it plainly under the default policy.
    await admin(sandbox, mod, general, "nsfw", {"mode": "age_restricted"})
    plain = await imagine(sandbox, alice, sandbox.channel("nsfw-art"), "a nude statue --steps 2 --n 1")
    assert not plain.attachments[0].filename.startswith("SPOILER_")


async def test_job_command_hides_private_jobs_of_others(sandbox: Sandbox, bot: App) -> None:
    alice, bob, general = sandbox.users["alice"], sandbox.users["bob"], sandbox.channel("general")
    public = await imagine(sandbox, alice, general, "a public kite --steps 2 --n 1")
    shown = await sandbox.slash(bob, general, "job", {"id": job_id_of(public)})
    await shown.wait_ack()
    assert shown.original is not None and not shown.original.ephemeral
    assert shown.original.attachments and "public kite" in shown.original.content

    shown_settings = await settings(sandbox, alice, general, private=True)
    assert "private mode: on" in shown_settings
    secret = await sandbox.slash(alice, general, "imagine", {"prompt": "a secret kite --steps 2 --n 1"})
    await secret.wait_ack()
    message = await sandbox.wait_for(
        lambda: secret.original if secret.original is not None and secret.original.attachments else None,
        timeout=120)
    secret_id = job_id_of(message)
    for viewer, visible in ((bob, False), (alice, True)):
        asked = await sandbox.slash(viewer, general, "job", {"id": secret_id})
        await asked.wait_ack()
        assert asked.original is not None
        if visible:
            assert "secret kite" in asked.original.content and asked.original.ephemeral
        else:
            assert asked.original.ephemeral and "does not exist" in asked.original.content
            assert "secret kite" not in asked.original.content


async def test_images_flagged_by_the_safety_checker_follow_the_policy(sandbox: Sandbox,
                                                                     start_bot: Any) -> None:
    # A bot with its own engine whose tiny stand-in checker flags every image (threshold 0): an
    # innocent prompt passes the prompt policy, then its pixels are judged.
    app = await start_bot(own_engine=True, ATELIER_TINY_NSFW_THRESHOLD="0")
    mod, alice = sandbox.users["mod"], sandbox.users["alice"]
    general, restricted = sandbox.channel("general"), sandbox.channel("nsfw-art")
    hidden_id = await imagine_text(sandbox, alice, general, "a calm lake --steps 2 --n 1")
    assert app.services is not None
    [row] = await app.services.db.images.for_job(hidden_id)
    assert row.nsfw  # the verdict is recorded for galleries
    shown = await imagine(sandbox, alice, restricted, "a calm lake --steps 2 --n 1")
    assert not shown.attachments[0].filename.startswith("SPOILER_")
    await admin(sandbox, mod, general, "nsfw", {"mode": "spoiler"})
    spoiled = await imagine(sandbox, alice, general, "a calm lake --steps 2 --n 1")
    assert spoiled.attachments[0].filename.startswith("SPOILER_")


async def imagine_text(sandbox: Sandbox, user: Any, channel: Any, prompt: str) -> int:
    """Run /imagine and wait for a final message without an image (the policy hid it)."""
    interaction = await sandbox.slash(user, channel, "imagine", {"prompt": prompt})
    await interaction.wait_ack()

    def hidden() -> Any:
        message = interaction.original
        return message if message is not None and "hidden" in message.content else None

    message = await sandbox.wait_for(hidden, timeout=120)
    assert not message.attachments and "NSFW" in message.content
    return job_id_of(message)


async def test_sdxl_images_are_judged_by_the_standalone_checker(sandbox: Sandbox, start_bot: Any,
                                                                tmp_path: Path) -> None:
    # SDXL pipelines carry no checker of their own: ATELIER_SAFETY_CHECKER's (here one that flags every
    # image) judges the pixels of an innocent prompt, and the guild's policy decides what members see.
    checker = write_tiny_safety_checker(tmp_path / "checker", -math.inf)
    app = await start_bot(own_engine=True, ATELIER_MODEL="tiny-xl", ATELIER_SAFETY_CHECKER=str(checker))
    mod, alice, general = sandbox.users["mod"], sandbox.users["alice"], sandbox.channel("general")
    hidden_id = await imagine_text(sandbox, alice, general, "a calm lake --steps 1 --n 1")
    assert app.services is not None
    [row] = await app.services.db.images.for_job(hidden_id)
    assert row.nsfw
    await admin(sandbox, mod, general, "nsfw", {"mode": "spoiler"})
    spoiled = await imagine(sandbox, alice, general, "a calm lake --steps 1 --n 1")
    assert spoiled.attachments[0].filename.startswith("SPOILER_")


async def test_sdxl_images_the_standalone_checker_passes_are_shown(sandbox: Sandbox, start_bot: Any,
                                                                   tmp_path: Path) -> None:
    checker = write_tiny_safety_checker(tmp_path / "checker", math.inf)
    app = await start_bot(own_engine=True, ATELIER_MODEL="tiny-xl", ATELIER_SAFETY_CHECKER=str(checker))
    shown = await imagine(sandbox, sandbox.users["alice"], sandbox.channel("general"),
                          "a calm lake --steps 1 --n 1")
    assert shown.attachments and not shown.attachments[0].filename.startswith("SPOILER_")
    assert app.services is not None
    [row] = await app.services.db.images.for_job(job_id_of(shown))
    assert not row.nsfw
