"""/imagine: a prompt (or `image:`, a starting image) into a queued job. The buttons under its results
live in bot/buttons.py."""

from __future__ import annotations

import dataclasses
import logging

import discord
from discord import app_commands
from discord.ext import commands

from bot.attachments import start_from_upload
from bot.defaults import model_choices, personal_draft, personal_prompt
from bot.expansion import BatchButton, start_expanded
from bot.interaction import AtelierInteraction
from bot.jobflow import start_job
from bot.references import ATTACHMENT, plan_references
from bot.wildcards import server_wildcards
from generation.errors import InvalidRequest
from generation.request import Kind
from generation.samplers import sampler_label
from generation.validate import (
    ASPECTS,
    SAMPLER_NAMES,
    RequestDraft,
    build_request,
    expand_prompt,
    reference_flags,
)

log = logging.getLogger(__name__)

DEFAULT_GRID = 4
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
        reference="A style reference image (as --sref; or name it: --cref attachment / --oref attachment)",
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
                      strength: float | None = None, reference: discord.Attachment | None = None) -> None:
        services = interaction.client.services
        # Permutations and --repeat: one prompt may make several jobs (bot/expansion.py).
        # `--p` adds the member's starred images as `--sref` unless they attached a reference of their own.
        expanded = await personal_prompt(interaction, prompt, model, references=reference is None)
        prompts = expand_prompt(expanded)
        if image is not None and len(prompts) > 1:
            raise InvalidRequest("Permutations and `--repeat` make several jobs from a prompt alone; "
                                 "leave out the image.")
        drafts = []
        for text in prompts:
            # Each expanded prompt names its own references (`--sref {a, b}` permutes them too).
            draft = RequestDraft(prompt=text, negative=negative, aspect=aspect, seed=seed, steps=steps,
                                 guidance=guidance, sampler=sampler, model=model, count=count,
                                 strength=strength)
            if reference is not None or reference_flags(text):
                attached = {ATTACHMENT: reference} if reference else {}
                draft = await plan_references(interaction, draft, attached)
            drafts.append(draft)
        if image is not None:
            await start_from_upload(interaction, drafts[0], image)
            return
        lists = await server_wildcards(services.db, interaction.guild_id)
        requests = []
        for draft in drafts:
            draft = await personal_draft(interaction, draft)
            if draft.count is None and draft.kind == Kind.TXT2IMG:
                # Like Midjourney: a 2x2 grid unless the member (options, flags, /settings) chose otherwise.
                draft = dataclasses.replace(draft, count=DEFAULT_GRID)
            requests.append(build_request(draft, services.registry, wildcards=lists))
        if len(requests) == 1:
            await start_job(interaction, requests[0])
        else:
            await start_expanded(interaction, requests)


async def setup(bot: commands.Bot) -> None:
    bot.add_dynamic_items(BatchButton)
    await bot.add_cog(Imagine(bot))
