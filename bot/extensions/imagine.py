"""/imagine: a prompt (or `image:`, a starting image) into a queued job. The buttons under its results
live in bot/buttons.py."""

from __future__ import annotations

import logging

import discord
from discord import app_commands
from discord.ext import commands

from bot.attachments import start_from_upload
from bot.defaults import model_choices
from bot.interaction import AtelierInteraction
from bot.jobflow import imagine_prompt
from generation.samplers import sampler_label
from generation.validate import (
    ASPECTS,
    SAMPLER_NAMES,
    RequestDraft,
)

log = logging.getLogger(__name__)

SEED_MAX = 2**32 - 1


class Imagine(commands.Cog):
    def __init__(self, bot: commands.Bot) -> None:
        self.bot = bot

    @app_commands.command(name="imagine", description="Turn a prompt into images")
    @app_commands.describe(
        prompt="What to draw. Flags work too: --ar 16:9 --seed 42 --no cars --steps 30 --cfg 6.5 --n 2",
        negative="What to keep out of the image",
        aspect="Aspect ratio",
        seed="Seed of the first image (the others use seed+1, seed+2, ...)",
        steps="Sampling steps",
        guidance="Guidance scale (how literally to follow the prompt)",
        sampler="Sampler",
        model="Model",
        count="How many images (1-4)",
        image="A starting image (img2img)",
        strength="How much to change the starting image (0-1)",
    )
    @app_commands.choices(
        aspect=[app_commands.Choice(name=a, value=a) for a in ASPECTS],
        # Labels members know ("DPM++ 2M Karras"); the value, stored in the request, is the canonical name.
        sampler=[app_commands.Choice(name=sampler_label(s), value=s) for s in SAMPLER_NAMES],
    )
    @app_commands.autocomplete(model=model_choices)
    async def imagine(self, interaction: AtelierInteraction, prompt: str, negative: str | None = None,
                      aspect: str | None = None, seed: int | None = None, steps: int | None = None,
                      guidance: float | None = None, sampler: str | None = None, model: str | None = None,
                      count: int | None = None, image: discord.Attachment | None = None,
                      strength: float | None = None) -> None:
        draft = RequestDraft(prompt=prompt, negative=negative, aspect=aspect, seed=seed, steps=steps,
                             guidance=guidance, sampler=sampler, model=model, count=count, strength=strength)
        if image is not None:
            await start_from_upload(interaction, draft, image)
            return
        await imagine_prompt(interaction, draft)


async def setup(bot: commands.Bot) -> None:
    await bot.add_cog(Imagine(bot))
