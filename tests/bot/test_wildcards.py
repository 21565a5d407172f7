"""/admin wildcards and `__name__` in /imagine through the sandbox: moderators only and audited, the
entry drawn with the seed (the same seed draws it again), the drawn prompt in Details and the PNG, an
unknown wildcard refused by name with nothing queued."""

from __future__ import annotations

import io
from typing import Any

from PIL import Image

from bot.app import App
from sandbox import Sandbox
from tests.bot.helpers import button, imagine


async def _admin(sandbox: Sandbox, user: Any, sub: str, **options: Any) -> Any:
    interaction = await sandbox.slash(user, sandbox.channel("general"), "admin", options, subcommand=sub,
                                      group="wildcards")
    await interaction.wait_ack()
    assert interaction.original is not None and interaction.original.ephemeral
    return interaction.original


async def test_wildcards_are_managed_by_moderators_and_drawn_with_the_seed(sandbox: Sandbox,
                                                                          bot: App) -> None:
    assert bot.services is not None
    db, gid = bot.services.db, sandbox.guild.id
    alice, mod, general = sandbox.users["alice"], sandbox.users["mod"], sandbox.channel("general")

    refused = await _admin(sandbox, alice, "set", name="colour", values="red, green")
    assert "Manage Server" in refused.content and await db.guilds.get(gid) == {}
    shown = await _admin(sandbox, mod, "set", name="colour", values="crimson, olive, azure, amber")
    assert "4 entries" in shown.content
    assert (await db.audit.list(gid, limit=1))[0].action == "wildcards.set"
    too_long = await _admin(sandbox, mod, "set", name="colour", values="x" * 150)
    assert "at most 100 characters" in too_long.content
    listed = await _admin(sandbox, mod, "list")
    assert "`__colour__` (4): crimson, olive, azure, amber" in listed.content

    first = await imagine(sandbox, alice, general, "a __colour__ kite --seed 11 --steps 1 --n 1")
    again = await imagine(sandbox, alice, general, "a __colour__ kite --seed 11 --steps 1 --n 1")
    jobs = await db.jobs.list_for_user(alice.id, limit=5)
    prompts = {job.request["prompt"] for job in jobs}
    assert len(prompts) == 1 and prompts <= {f"a {c} kite" for c in ("crimson", "olive", "azure", "amber")}
    [drawn] = prompts
    details = await sandbox.click(alice, again, button(again, "Details"))
    await details.wait_ack()
    assert details.original is not None and drawn in str(details.original.embeds)
    with Image.open(io.BytesIO(first.attachments[0].data)) as png:
        assert png.text["parameters"].startswith(drawn + "\n")

    # An unknown one is named; nothing is queued.
    sent = await sandbox.slash(alice, general, "imagine", {"prompt": "a __size__ kite --steps 1"})
    await sent.wait_ack()
    assert sent.original is not None and sent.original.ephemeral
    assert "`__size__`" in sent.original.content and "`__colour__`" in sent.original.content
    assert len(await db.jobs.list_for_user(alice.id, limit=5)) == 2

    # `/imagine image:` draws them too, and the prompt it checked is the one that renders.
    buf = io.BytesIO()
    Image.new("RGB", (64, 64), (200, 120, 40)).save(buf, format="PNG")
    sent = await sandbox.slash(alice, general, "imagine", {"prompt": "a __colour__ boat --steps 1 --seed 5"},
                               attachments={"image": ("boat.png", buf.getvalue())})
    await sent.wait_ack()
    assert sent.original is not None and "queued" in sent.original.content, sent.original.content
    upload = (await db.jobs.list_for_user(alice.id, limit=1))[0]
    assert upload.kind == "img2img" and "__" not in upload.request["prompt"]

    removed = await _admin(sandbox, mod, "remove", name="colour")
    assert "Removed" in removed.content
    assert (await db.audit.list(gid, limit=1))[0].action == "wildcards.remove"
    assert await db.guilds.get(gid) == {}
