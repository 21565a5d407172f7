"""/shorten prompt: the prompt's token count against what the model reads, the words that change it least
(generation/shorten.py), and a button that imagines the shortened prompt. The button keeps no state: the
shortened prompt is read back from the message it sits under, so it works after a restart."""

from __future__ import annotations

import dataclasses
import re
from typing import Any

import discord
from discord import app_commands
from discord.ext import commands

from bot.buttons import Acting
from bot.defaults import model_choices, personal_draft
from bot.interaction import AtelierInteraction
from bot.jobflow import start_job
from generation.errors import InvalidRequest
from generation.request import Kind
from generation.shorten import Shortening, analyse, supported
from generation.validate import RequestDraft, build_request

DEFAULT_GRID = 4
SHOWN_WORDS = 8
_SHORTENED_RE = re.compile(r"Shortened prompt:\n```\n(.+?)\n```", re.S)


def describe(result: Shortening) -> str:
    fits = ("fits one window" if result.tokens <= result.window
            else f"past the first {result.window} the words go in further windows and weigh less")
    cut = (f"; past {result.readable} tokens the model reads nothing"
           if result.tokens > result.readable else "")
    least = sorted(result.influence, key=lambda pair: pair[1])[:SHOWN_WORDS]
    words = ", ".join(f"`{w.replace('`', '')}` {d:.4f}" for w, d in least)
    return (f"**{result.tokens} tokens** ({fits}{cut}).\n"
            f"Words that change it least (embedding distance when dropped): {words}\n"
            f"Shortened prompt:\n```\n{result.shortened.replace('`', '')}\n```")[:1990]


class ImagineShortened(Acting, discord.ui.DynamicItem[discord.ui.Button[Any]],
                       template=r"atelier:shorten:go"):
    def __init__(self) -> None:
        super().__init__(discord.ui.Button(label="Imagine shortened", style=discord.ButtonStyle.primary,
                                           custom_id="atelier:shorten:go"))

    @classmethod
    async def from_custom_id(cls, interaction: discord.Interaction[Any], item: discord.ui.Item[Any],
                             match: re.Match[str], /) -> ImagineShortened:
        return cls()

    async def act(self, interaction: AtelierInteraction) -> None:
        found = _SHORTENED_RE.search(interaction.message.content if interaction.message else "")
        if found is None:
            raise InvalidRequest("That message no longer holds a prompt.")
        draft = await personal_draft(interaction, RequestDraft(prompt=found.group(1)))
        if draft.count is None and draft.kind == Kind.TXT2IMG:
            draft = dataclasses.replace(draft, count=DEFAULT_GRID)
        await start_job(interaction, build_request(draft, interaction.client.services.registry))


class Shorten(commands.Cog):
    def __init__(self, bot: commands.Bot) -> None:
        self.bot = bot

    @app_commands.command(name="shorten", description="Which words of a prompt matter, and a shorter one")
    @app_commands.describe(prompt="The prompt to analyse", model="The model whose text encoder judges")
    @app_commands.autocomplete(model=model_choices)
    async def shorten(self, interaction: AtelierInteraction, prompt: app_commands.Range[str, 1, 1500],
                      model: str | None = None) -> None:
        registry = interaction.client.services.registry
        spec = registry.spec(model)
        pipe = registry.resident_pipeline(spec.name)
        if pipe is None:
            raise InvalidRequest(f"Model `{spec.name}` is not loaded right now; try again after an /imagine "
                                 "with it.")
        if not supported(pipe):
            raise InvalidRequest("/shorten works with SD 1.x, SD 2.x and SDXL models.")
        await interaction.response.defer(ephemeral=True, thinking=True)
        # On the torch thread, between two steps of the render running there (Engine.side_call).
        result = await interaction.client.services.model_call(analyse, pipe, prompt)
        view = discord.ui.View(timeout=None)
        view.add_item(ImagineShortened())
        await interaction.followup.send(describe(result), view=view, ephemeral=True)


async def setup(bot: commands.Bot) -> None:
    bot.add_dynamic_items(ImagineShortened)
    await bot.add_cog(Shorten(bot))
