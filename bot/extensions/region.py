"""/region and the message menu "Vary (Region) with this mask": Vary (Region) with the member's own mask. A
modal cannot carry a file, so the mask comes as a slash command attachment or from a message it is attached
to (the menu's modal asks for the job); the Vary (Region) editor names the command with the job filled in."""

from __future__ import annotations

import re
from typing import Any

import discord
from discord import app_commands
from discord.ext import commands

from bot.attachments import image_attachment
from bot.buttons import start_masked_region
from bot.errors import report_error
from bot.interaction import AtelierInteraction
from generation.canvas import MAX_FEATHER
from generation.errors import InvalidRequest

# `12` (a job of one image) or `12.3` (its third image), as the editor and the U/V buttons count them.
_JOB = re.compile(r"\s*#?(\d{1,19})(?:[.:/#](\d{1,2}))?\s*")
# The first job named in a message's text (`12` or `12.3`), to prefill the menu's modal.
_NAMED = re.compile(r"(?<![\w.])#?(\d{1,19}(?:\.\d{1,2})?)(?![\w.])")
MENU_NAME = "Vary (Region) with this mask"


def parse_job(text: str) -> tuple[int, int | None]:
    """(job id, image index from 0 or None) from `12` / `12.3`; InvalidRequest otherwise."""
    match = _JOB.fullmatch(text)
    if match is None or (match[2] is not None and int(match[2]) < 1):
        raise InvalidRequest("Name the image as `job` or `job.image`, e.g. `12.3` for job 12's third image.")
    return int(match[1]), None if match[2] is None else int(match[2]) - 1


class MaskModal(discord.ui.Modal, title="Vary (Region) with this mask"):
    def __init__(self, attachment: discord.Attachment, job: str) -> None:
        super().__init__(timeout=15 * 60)
        self.attachment = attachment
        self.job: discord.ui.TextInput[MaskModal] = discord.ui.TextInput(
            label="Image to repaint (job, or job.image: 12.3)", default=job or None, max_length=30,
            custom_id="job")
        self.prompt: discord.ui.TextInput[MaskModal] = discord.ui.TextInput(
            label="Prompt for the region (empty: the job's)", style=discord.TextStyle.paragraph,
            required=False, max_length=1500, custom_id="prompt")
        self.feather: discord.ui.TextInput[MaskModal] = discord.ui.TextInput(
            label=f"Feather in pixels (0-{MAX_FEATHER})", required=False, max_length=3, placeholder="0",
            custom_id="feather")
        for item in (self.job, self.prompt, self.feather):
            self.add_item(item)

    async def on_submit(self, interaction: discord.Interaction[Any]) -> None:
        raw = (self.feather.value or "").strip()
        try:
            feather = int(raw) if raw else 0
        except ValueError:
            raise InvalidRequest(f"Feather is a whole number of pixels from 0 to {MAX_FEATHER}.") from None
        job_id, index = parse_job(self.job.value)
        prompt = self.prompt.value.strip() or None
        await start_masked_region(interaction, job_id, index, self.attachment, prompt, feather)

    async def on_error(self, interaction: AtelierInteraction, error: Exception,  # type: ignore[override]
                       item: Any = None) -> None:
        await report_error(interaction, error)


async def vary_with_mask(interaction: AtelierInteraction, message: discord.Message) -> None:
    attachment = image_attachment(message)
    if attachment is None:
        raise InvalidRequest("That message has no mask image attached.")
    named = _NAMED.search(message.content or "")
    await interaction.response.send_modal(MaskModal(attachment, named[1] if named else ""))


class Region(commands.Cog):
    def __init__(self, bot: commands.Bot) -> None:
        self.bot = bot

    @app_commands.command(name="region", description="Vary (Region) with your own mask")
    @app_commands.describe(
        job="The image: job number, and image number for a grid (e.g. 12.3)",
        mask="White = repaint, black = keep (or a PNG: transparent = repaint), at the image's shape",
        prompt="A new prompt for the repainted region (default: the job's)",
        feather="Pixels over which the repainted area fades into the kept one (default 0: a hard edge)")
    async def region(self, interaction: AtelierInteraction, job: app_commands.Range[str, 1, 30],
                     mask: discord.Attachment,
                     prompt: app_commands.Range[str, 1, 1500] | None = None,
                     feather: app_commands.Range[int, 0, MAX_FEATHER] = 0) -> None:
        job_id, index = parse_job(job)
        await start_masked_region(interaction, job_id, index, mask, prompt, feather)


async def setup(bot: commands.Bot) -> None:
    await bot.add_cog(Region(bot))
    bot.tree.add_command(app_commands.ContextMenu(name=MENU_NAME, callback=vary_with_mask))


async def teardown(bot: commands.Bot) -> None:
    bot.tree.remove_command(MENU_NAME, type=discord.AppCommandType.message)
