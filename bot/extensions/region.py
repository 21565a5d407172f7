"""/region: Vary (Region) with the member's own mask. A modal cannot carry a file, so the mask comes as a
slash command attachment; the Vary (Region) editor names this command with the job filled in."""

from __future__ import annotations

import re

import discord
from discord import app_commands
from discord.ext import commands

from bot.buttons import start_masked_region
from bot.interaction import AtelierInteraction
from generation.canvas import MAX_FEATHER
from generation.errors import InvalidRequest

# `12` (a job of one image) or `12.3` (its third image), as the editor and the U/V buttons count them.
_JOB = re.compile(r"\s*#?(\d{1,19})(?:[.:/#](\d{1,2}))?\s*")


def parse_job(text: str) -> tuple[int, int | None]:
    """(job id, image index from 0 or None) from `12` / `12.3`; InvalidRequest otherwise."""
    match = _JOB.fullmatch(text)
    if match is None or (match[2] is not None and int(match[2]) < 1):
        raise InvalidRequest("Name the image as `job` or `job.image`, e.g. `12.3` for job 12's third image.")
    return int(match[1]), None if match[2] is None else int(match[2]) - 1


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
