"""/imagine and the buttons under its results: upscale, vary, reroll, remix, details, delete."""

from __future__ import annotations

import dataclasses
import logging
import random
from typing import Any

import discord
from discord import app_commands
from discord.ext import commands

from bot import presenter
from bot.access import load_job, require_owner_or_moderator
from bot.attachments import start_from_upload
from bot.buttons import register_action
from bot.defaults import personal_draft
from bot.errors import report_error
from bot.interaction import AtelierInteraction
from bot.jobflow import start_job
from bot.reply import reply
from generation.errors import InvalidRequest, NotFound
from generation.request import Kind, RenderRequest
from generation.validate import (
    ASPECTS,
    SAMPLER_NAMES,
    RequestDraft,
    build_request,
    upscale_of,
    variation_of,
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
    )
    @app_commands.choices(
        aspect=[app_commands.Choice(name=a, value=a) for a in ASPECTS],
        sampler=[app_commands.Choice(name=s, value=s) for s in SAMPLER_NAMES][:25],
    )
    async def imagine(self, interaction: AtelierInteraction, prompt: str, negative: str | None = None,
                      aspect: str | None = None, seed: int | None = None, steps: int | None = None,
                      guidance: float | None = None, sampler: str | None = None, model: str | None = None,
                      count: int | None = None, image: discord.Attachment | None = None,
                      strength: float | None = None) -> None:
        services = interaction.client.services
        draft = RequestDraft(prompt=prompt, negative=negative, aspect=aspect, seed=seed, steps=steps,
                             guidance=guidance, sampler=sampler, model=model, count=count, strength=strength)
        if image is not None:
            await start_from_upload(interaction, draft, image)
            return
        draft = await personal_draft(interaction, draft)
        if draft.count is None and draft.kind == Kind.TXT2IMG:
            # Like Midjourney: a 2x2 grid unless the member (options, flags, /settings) chose otherwise.
            draft = dataclasses.replace(draft, count=DEFAULT_GRID)
        request = build_request(draft, services.registry)
        await start_job(interaction, request)

    @imagine.autocomplete("model")
    async def model_autocomplete(self, interaction: AtelierInteraction,
                                 current: str) -> list[app_commands.Choice[str]]:
        names = interaction.client.services.registry.names()
        current = current.lower()
        return [app_commands.Choice(name=n, value=n) for n in names if current in n.lower()][:25]


# -- buttons -------------------------------------------------------------------------------------

async def source_of(interaction: AtelierInteraction, job_id: int, index: int | None) -> tuple[Any, str]:
    job = await load_job(interaction, job_id)
    if job.status != "done":
        raise InvalidRequest(f"Job {job_id} has no images yet.")
    rows = {row.index: row for row in await interaction.client.services.db.images.for_job(job_id)}
    row = rows.get(index or 0)
    if row is None or row.deleted:
        raise NotFound("That image is gone.")
    return job, row.blob


async def on_upscale(interaction: AtelierInteraction, job_id: int, index: int | None) -> None:
    job, blob = await source_of(interaction, job_id, index)
    parent = RenderRequest.from_json(job.request)
    # The cap is the parent model's own: Upscale → Vary → Upscale must not ask SD1.5 for 2048².
    family = interaction.client.services.registry.spec(parent.model).family
    request = upscale_of(parent, index or 0, source=blob, family=family)
    await start_job(interaction, request, parent_job_id=job_id, parent_index=index or 0)


async def _vary(interaction: AtelierInteraction, job_id: int, index: int | None, strong: bool) -> None:
    job, blob = await source_of(interaction, job_id, index)
    request = variation_of(RenderRequest.from_json(job.request), index or 0, strong=strong, source=blob)
    await start_job(interaction, request, parent_job_id=job_id, parent_index=index or 0)


async def on_vary(interaction: AtelierInteraction, job_id: int, index: int | None) -> None:
    # V1-V4 under a grid make a strong variation, as Midjourney's default "high variation mode" does.
    await _vary(interaction, job_id, index, strong=True)


async def on_subtle(interaction: AtelierInteraction, job_id: int, index: int | None) -> None:
    await _vary(interaction, job_id, index, strong=False)


async def on_strong(interaction: AtelierInteraction, job_id: int, index: int | None) -> None:
    await _vary(interaction, job_id, index, strong=True)


def reseeded(request: RenderRequest) -> RenderRequest:
    first = random.randint(0, SEED_MAX - request.count)
    return dataclasses.replace(request, seeds=tuple(first + i for i in range(request.count)))


async def on_reroll(interaction: AtelierInteraction, job_id: int, index: int | None) -> None:
    job = await load_job(interaction, job_id)
    await start_job(interaction, reseeded(RenderRequest.from_json(job.request)), parent_job_id=job_id)


class RemixModal(discord.ui.Modal, title="Remix prompt"):
    def __init__(self, job_id: int, request: RenderRequest) -> None:
        super().__init__(timeout=15 * 60, custom_id=f"atelier:remixmodal:{job_id}")
        self.job_id = job_id
        self.request = request
        self.prompt: discord.ui.TextInput[RemixModal] = discord.ui.TextInput(
            label="Prompt", style=discord.TextStyle.paragraph, default=request.prompt[:4000], max_length=4000,
            custom_id="prompt")
        self.negative: discord.ui.TextInput[RemixModal] = discord.ui.TextInput(
            label="Negative prompt", required=False, default=request.negative[:4000] or None,
            max_length=4000, custom_id="negative")
        self.add_item(self.prompt)
        self.add_item(self.negative)

    async def on_submit(self, interaction: discord.Interaction[Any]) -> None:
        services = interaction.client.services
        parent = self.request
        # The edited prompt may carry flags again; everything else follows the parent job.
        draft = RequestDraft(prompt=self.prompt.value, negative=self.negative.value or None,
                             steps=parent.steps, guidance=parent.guidance, sampler=parent.sampler,
                             model=parent.model, count=parent.count)
        request = build_request(draft, services.registry)
        if "--ar" not in self.prompt.value and parent.kind == Kind.TXT2IMG:
            request = dataclasses.replace(request, width=parent.width, height=parent.height)
        await start_job(interaction, request, parent_job_id=self.job_id)

    async def on_error(  # type: ignore[override]  # Modal's own signature has no item argument
            self, interaction: AtelierInteraction, error: Exception, /) -> None:
        await report_error(interaction, error, job_id=self.job_id)


async def on_remix(interaction: AtelierInteraction, job_id: int, index: int | None) -> None:
    job = await load_job(interaction, job_id)
    await interaction.response.send_modal(RemixModal(job_id, RenderRequest.from_json(job.request)))


async def on_info(interaction: AtelierInteraction, job_id: int, index: int | None) -> None:
    job = await load_job(interaction, job_id)
    embed = presenter.details(job_id, RenderRequest.from_json(job.request),
                              {"By": f"<@{job.user_id}>", "Status": job.status})
    await reply(interaction, embed=embed, ephemeral=True)


async def on_delete(interaction: AtelierInteraction, job_id: int, index: int | None) -> None:
    job = await load_job(interaction, job_id)
    require_owner_or_moderator(interaction, job, "delete it")
    services = interaction.client.services
    await services.db.images.delete_job_images(job_id)
    if interaction.user.id != job.user_id:
        await services.db.audit.record(job.guild_id, interaction.user.id, "delete", f"job:{job_id}",
                                       {"owner": job.user_id})
    if interaction.message is not None:
        try:
            await interaction.message.delete()
        except discord.NotFound:
            pass
    await reply(interaction, f"Deleted job {job_id}.", ephemeral=True)


async def setup(bot: commands.Bot) -> None:
    await bot.add_cog(Imagine(bot))
    for action, handler in {
        "up": on_upscale, "vary": on_vary, "subtle": on_subtle, "strong": on_strong,
        "reroll": on_reroll, "remix": on_remix, "info": on_info, "delete": on_delete,
    }.items():
        register_action(action, handler)
