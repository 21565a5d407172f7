"""/lineage through the sandbox: the chain of parents with the action that made each job, the tree of what
was made from it, and bot/access.py's rule: a job the viewer may not see is never named (a hidden
ancestor is "…", a hidden child is left out, a hidden job itself does not exist)."""

from __future__ import annotations

from typing import Any

from bot.app import App
from bot.settings_keys import MEMBER
from sandbox import Sandbox
from tests.bot.helpers import button, click_for_result, imagine, job_id_of


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
