"""The "Use as style reference" message menu: a modal for the prompt, with `--sref` already naming that
message's image (one of our results: its job image, if the member may see the job; else the message's own
attached image, by its Discord link). The submission is an /imagine of that prompt."""

from __future__ import annotations

import dataclasses
import re
from typing import Any

import discord
from discord import app_commands
from discord.ext import commands

from bot.access import load_job
from bot.defaults import personal_draft
from bot.errors import report_error
from bot.interaction import AtelierInteraction
from bot.jobflow import start_job
from bot.references import plan_references
from generation.errors import InvalidRequest
from generation.validate import RequestDraft, build_request

MENU_NAME = "Use as style reference"
DEFAULT_GRID = 4
_JOB_REF = re.compile(r"job `(\d{1,19})`")
_IMAGE_NAME = re.compile(r"\.(png|jpe?g|webp|gif|bmp)$", re.I)


class StyleReferenceModal(discord.ui.Modal, title="Imagine in this style"):
    def __init__(self, reference: str) -> None:
        super().__init__(timeout=15 * 60)
        self.prompt: discord.ui.TextInput[StyleReferenceModal] = discord.ui.TextInput(
            label="Prompt", style=discord.TextStyle.paragraph, default=f" --sref {reference}",
            max_length=4000,
            placeholder="What to draw in this style (flags work: --sw 200 --ar 3:2)", custom_id="prompt")
        self.add_item(self.prompt)

    async def on_submit(self, interaction: discord.Interaction[Any]) -> None:
        services = interaction.client.services
        draft = await plan_references(interaction, RequestDraft(prompt=self.prompt.value), {})
        draft = await personal_draft(interaction, draft)
        if draft.count is None:
            draft = dataclasses.replace(draft, count=DEFAULT_GRID)
        await start_job(interaction, build_request(draft, services.registry))

    async def on_error(self, interaction: AtelierInteraction, error: Exception,  # type: ignore[override]
                       item: Any = None) -> None:
        await report_error(interaction, error)


async def reference_of(interaction: AtelierInteraction, message: discord.Message) -> str:
    """How `--sref` names the message's image: `<job>.<n>` for one image of our results (after the access
    check: a job the member may not see does not exist for them), else the attachment's link."""
    me = interaction.client.user
    match = _JOB_REF.search(message.content or "")
    if me is not None and message.author.id == me.id and match:
        job = await load_job(interaction, int(match.group(1)))
        if len(job.request.get("seeds", ())) == 1:
            return f"{job.id}.1"
    for attachment in message.attachments:
        if (attachment.content_type or "").startswith("image/") or _IMAGE_NAME.search(attachment.filename):
            return attachment.url
    raise InvalidRequest("That message has no image to use as a style reference.")


async def use_as_style_reference(interaction: AtelierInteraction, message: discord.Message) -> None:
    await interaction.response.send_modal(StyleReferenceModal(await reference_of(interaction, message)))


async def setup(bot: commands.Bot) -> None:
    bot.tree.add_command(app_commands.ContextMenu(name=MENU_NAME, callback=use_as_style_reference))


async def teardown(bot: commands.Bot) -> None:
    bot.tree.remove_command(MENU_NAME, type=discord.AppCommandType.message)
