"""/blend: two to five images blended into one image prompt (IP-Adapter, generation/references.py), with an
aspect and an optional text prompt: a normal job, with a grid and the full set of buttons."""

from __future__ import annotations

import dataclasses

import discord
from discord import app_commands
from discord.ext import commands

from bot.defaults import model_choices, personal_draft
from bot.interaction import AtelierInteraction
from bot.jobflow import start_job
from bot.references import plan_references
from generation.references import IMAGE
from generation.validate import ASPECTS, RequestDraft, build_request

DEFAULT_GRID = 4


class Blend(commands.Cog):
    def __init__(self, bot: commands.Bot) -> None:
        self.bot = bot

    @app_commands.command(name="blend", description="Blend 2 to 5 images into new ones")
    @app_commands.describe(
        image1="First image", image2="Second image", image3="Third image", image4="Fourth image",
        image5="Fifth image", aspect="Aspect ratio", prompt="Words to add (optional; flags work: --iw 1.5)",
        model="Model",
    )
    @app_commands.choices(aspect=[app_commands.Choice(name=a, value=a) for a in ASPECTS])
    @app_commands.autocomplete(model=model_choices)
    async def blend(self, interaction: AtelierInteraction, image1: discord.Attachment,
                    image2: discord.Attachment, image3: discord.Attachment | None = None,
                    image4: discord.Attachment | None = None, image5: discord.Attachment | None = None,
                    aspect: str | None = None, prompt: str | None = None, model: str | None = None) -> None:
        services = interaction.client.services
        images = [a for a in (image1, image2, image3, image4, image5) if a is not None]
        attachments = {f"image{i}": a for i, a in enumerate(images, start=1)}
        draft = RequestDraft(prompt=prompt or "", aspect=aspect, model=model)
        named = [(IMAGE, name) for name in attachments]
        draft = await plan_references(interaction, draft, attachments, named=named)
        draft = await personal_draft(interaction, draft)
        if draft.count is None:
            draft = dataclasses.replace(draft, count=DEFAULT_GRID)
        await start_job(interaction, build_request(draft, services.registry))


async def setup(bot: commands.Bot) -> None:
    await bot.add_cog(Blend(bot))
