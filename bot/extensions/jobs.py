"""/job (bring back any past job with working buttons, like Midjourney's /show) and /queue (your queued
and running jobs, with positions and cancel buttons)."""

from __future__ import annotations

import discord
from discord import app_commands
from discord.ext import commands

from bot import presenter, results
from bot.access import can_see, viewer_of
from bot.buttons import Action, CancelButton
from bot.interaction import AtelierInteraction
from bot.remote_status import remote_state
from bot.reply import reply

MAX_LISTED = 10


class Jobs(commands.Cog):
    def __init__(self, bot: commands.Bot) -> None:
        self.bot = bot

    @app_commands.command(name="job", description="Show a past job with its buttons")
    @app_commands.describe(id="The job number (shown under every result)")
    async def job(self, interaction: AtelierInteraction, id: app_commands.Range[int, 1]) -> None:
        await results.show_job(interaction, id)

    @app_commands.command(name="queue", description="Your queued and running jobs")
    async def queue(self, interaction: AtelierInteraction) -> None:
        services = interaction.client.services
        viewer = viewer_of(interaction)
        # Only the jobs that exist here (this server's, or the DM's): their cancel buttons go through
        # the same rule, and other servers' prompts stay out of this one.
        mine = [e for e in services.scheduler.snapshot()
                if e.user_id == viewer.user_id and can_see(e, viewer)]
        if not mine:
            await reply(interaction, "You have no queued or running jobs here.", ephemeral=True)
            return
        lines = []
        view = discord.ui.View(timeout=None)
        for entry in mine[:MAX_LISTED]:
            if entry.status == "running":
                state = "rendering"
            elif entry.paused:
                state = "held: the queue is paused by this server's moderators"
            else:
                state = f"position {entry.position}, {presenter.format_eta(entry.eta_s)}"
            remote = services.remote and remote_state(services.remote, entry)
            if remote:
                # Remote mode: which worker renders it, or which model it waits for a worker of.
                state = remote if entry.status == "running" else f"{state}, {remote}"
            prompt = presenter.short_prompt(str(entry.request.get("prompt", "")))[:80]
            lines.append(f"`{entry.job_id}` **{prompt}** — {state}")
            if len(view.children) < 25:
                view.add_item(CancelButton(Action.CANCEL, entry.job_id, label=f"Cancel {entry.job_id}",
                                        style=discord.ButtonStyle.danger))
        if len(mine) > MAX_LISTED:
            lines.append(f"… and {len(mine) - MAX_LISTED} more")
        await reply(interaction, "\n".join(lines), ephemeral=True, view=view)


async def setup(bot: commands.Bot) -> None:
    await bot.add_cog(Jobs(bot))
