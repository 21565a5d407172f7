"""One /imagine, several jobs: Midjourney's permutations (`{red, blue} bird --ar {1:1, 16:9}`) and
`--repeat N`. Each expanded prompt is its own job (message, queue entry, gallery entry). Up to
CONFIRM_ABOVE jobs queue at once; more wait for the author's Confirm, with the validated requests kept in
the database (`db.batches`) and the batch id in the buttons' custom_ids, so the choice survives a
restart and a second click queues nothing more."""

from __future__ import annotations

import re
from typing import Any

import discord

from bot.buttons import Acting
from bot.interaction import AtelierInteraction
from bot.jobflow import check_jobs, queue_checked, start_jobs
from bot.reply import reply
from generation.errors import NotAllowed, NotFound
from generation.request import RenderRequest

# Midjourney asks before more than a handful of jobs; a 2x2 of options still goes straight through.
CONFIRM_ABOVE = 4


async def start_expanded(interaction: AtelierInteraction, requests: list[RenderRequest]) -> None:
    """Queue the jobs of one expanded prompt, or ask first when there are many. Every rule is checked
    now, so a refusal (a banned word in one option, the queue cap) comes before any question."""
    if len(requests) <= CONFIRM_ABOVE:
        await start_jobs(interaction, requests)
        return
    await check_jobs(interaction, requests)
    batch_id = await interaction.client.services.db.batches.create(
        user_id=interaction.user.id, guild_id=interaction.guild_id, channel_id=interaction.channel_id,
        requests=[r.to_json() for r in requests])
    view = discord.ui.View(timeout=None)
    view.add_item(BatchButton(batch_id, confirm=True))
    view.add_item(BatchButton(batch_id, confirm=False))
    await interaction.response.send_message(confirm_text(requests), view=view, ephemeral=True)


def confirm_text(requests: list[RenderRequest]) -> str:
    shown = "\n".join(f"• {r.prompt[:80]}" for r in requests[:5])
    more = f"\n• … and {len(requests) - 5} more" if len(requests) > 5 else ""
    return f"This will queue {len(requests)} jobs:\n{shown}{more}"


class BatchButton(Acting, discord.ui.DynamicItem[discord.ui.Button[Any]],
                  template=r"atelier:batch:(?P<batch>[0-9]{1,19}):(?P<choice>yes|no)"):
    """Confirm / Cancel under "This will queue N jobs". State lives in the database row the custom_id
    names; only the member who asked may settle it."""

    def __init__(self, batch_id: int, *, confirm: bool) -> None:
        super().__init__(discord.ui.Button(
            label="Confirm" if confirm else "Cancel",
            style=discord.ButtonStyle.primary if confirm else discord.ButtonStyle.secondary,
            # yes / no, not a digit: `atelier:<word>:<n>:<n>` is a retired job button's shape (RetiredButton).
            custom_id=f"atelier:batch:{batch_id}:{'yes' if confirm else 'no'}"))
        self.batch_id = batch_id
        self.confirm = confirm

    @classmethod
    async def from_custom_id(cls, interaction: discord.Interaction[Any], item: discord.ui.Item[Any],
                             match: re.Match[str], /) -> BatchButton:
        return cls(int(match["batch"]), confirm=match["choice"] == "yes")

    async def act(self, interaction: AtelierInteraction) -> None:
        db = interaction.client.services.db
        batch = await db.batches.get(self.batch_id)
        if batch is None:
            raise NotFound("That request is gone.")
        if batch.user_id != interaction.user.id:
            raise NotAllowed("Only the member who asked for these jobs can confirm or cancel them.")
        if batch.outcome is not None:
            await reply(interaction, f"Already {batch.outcome}: nothing more was queued.", ephemeral=True)
            return
        if not self.confirm:
            if await db.batches.settle(self.batch_id, "cancelled"):
                await interaction.response.edit_message(content="Cancelled: nothing was queued.", view=None)
            else:
                await reply(interaction, "Already settled: nothing changed.", ephemeral=True)
            return
        requests = [RenderRequest.from_json(r) for r in batch.requests]
        # The rules are checked again: a ban, a new banned word or a fuller queue since the question count.
        rules = await check_jobs(interaction, requests)
        if not await db.batches.settle(self.batch_id, "confirmed"):  # another click got there first
            await reply(interaction, "Already confirmed: nothing more was queued.", ephemeral=True)
            return
        await interaction.response.edit_message(content=f"Confirmed: queuing {len(requests)} jobs.",
                                                view=None)
        await queue_checked(interaction, requests, rules)
