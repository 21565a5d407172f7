"""/describe and the "Describe this image" message menu: four prompt suggestions for an image (the captioner
in generation/caption.py), each with an Imagine button, and an "Imagine all".

The suggestions are stored (storage/descriptions.py) and the buttons name the row
(`atelier:desc:<id>:<i1-i4|all>`; not all digits, which bot/buttons.py's RetiredButton would claim), so
they work after a restart and for whoever clicks: the clicker owns the jobs, under their own defaults and the
server's rules, as if they had typed the prompt into /imagine.
"""

from __future__ import annotations

import asyncio
import dataclasses
import io
import re
from typing import Any

import discord
from discord import app_commands
from discord.ext import commands
from PIL import Image

from bot.attachments import check_declared, fetch, image_attachment
from bot.buttons import Acting
from bot.defaults import personal_draft, personal_prompt
from bot.interaction import AtelierInteraction
from bot.jobflow import start_job
from bot.policy import channel_is_age_restricted, nsfw_image_presentation
from bot.standing import check_member_here
from bot.wildcards import server_wildcards
from generation.errors import InvalidRequest, NotAllowed, NotFound
from generation.images import decode_upload, encode_upload
from generation.request import Kind
from generation.validate import RequestDraft, build_request

MENU_NAME = "Describe this image"
NOT_CONFIGURED = "Describing images is not configured on this server."
# The captioners look at 384 px or less; the reply shows the image at this size too.
DESCRIBE_PIXELS = 512 * 512
_NUMBERS = ("1️⃣", "2️⃣", "3️⃣", "4️⃣")
DEFAULT_GRID = 4  # as /imagine: a 2x2 grid unless the member chose a count


async def imagine_text(interaction: AtelierInteraction, prompt: str) -> int:
    """A job from a suggestion as /imagine makes one from a typed prompt: the member's /prefer options and
    suffix, styles, defaults and the server's wildcards. Returns the job id."""
    services = interaction.client.services
    draft = RequestDraft(prompt=await personal_prompt(interaction, prompt))
    draft = await personal_draft(interaction, draft)
    if draft.count is None and draft.kind == Kind.TXT2IMG:
        draft = dataclasses.replace(draft, count=DEFAULT_GRID)
    lists = await server_wildcards(services.db, interaction.guild_id)
    return await start_job(interaction, build_request(draft, services.registry, wildcards=lists))


async def presentation(interaction: AtelierInteraction, image: Image.Image) -> str:
    """How the member's image may be shown back here: judged by the default model's safety checker (the
    one its renders get), under the server's NSFW policy. Remote mode loads no model in the bot: shown."""
    services = interaction.client.services
    if services.engine is None:
        return "show"
    flagged = await services.looks_nsfw(services.engine.registry.default.name, image)
    return await nsfw_image_presentation(services, interaction.guild_id,
                                         channel_is_age_restricted(interaction), flagged)


def describe_text(user_id: int, prompts: tuple[str, ...] | list[str]) -> str:
    lines = [f"{_NUMBERS[i]} {prompt}" for i, prompt in enumerate(prompts)]
    return f"<@{user_id}>, four prompts for this image:\n" + "\n".join(lines)


def _part(which: str) -> str:
    return which if which == "all" else f"i{which}"


class DescribeButton(Acting, discord.ui.DynamicItem[discord.ui.Button[Any]],
                     template=r"atelier:desc:(?P<id>[0-9]{1,19}):(?:i(?P<which>[1-4])|(?P<all>all))"):
    """Imagine one suggestion (1-4) or all four, as the member who clicked."""

    def __init__(self, description_id: int, which: str) -> None:
        label = "Imagine all" if which == "all" else f"Imagine {which}"
        style = discord.ButtonStyle.primary if which == "all" else discord.ButtonStyle.secondary
        super().__init__(discord.ui.Button(label=label, style=style,
                                           custom_id=f"atelier:desc:{description_id}:{_part(which)}"))
        self.description_id = description_id
        self.which = which

    @classmethod
    async def from_custom_id(cls, interaction: discord.Interaction[Any], item: discord.ui.Item[Any],
                             match: re.Match[str], /) -> DescribeButton:
        return cls(int(match["id"]), match["which"] or "all")

    async def act(self, interaction: AtelierInteraction) -> None:
        found = await interaction.client.services.db.descriptions.get(self.description_id)
        # A custom_id is the client's word: suggestions are seen where they were made (their server; in a DM
        # by their member only), as a job is (bot/access.py). Anything else reads as missing.
        if found is None or found.guild_id != interaction.guild_id or (
                found.guild_id is None and found.user_id != interaction.user.id):
            raise NotFound("Those suggestions are gone; describe the image again.")
        prompts = found.prompts if self.which == "all" else found.prompts[int(self.which) - 1:int(self.which)]
        # One job per prompt; the first answers the click, the others follow it (bot/jobflow.py).
        for prompt in prompts:
            await imagine_text(interaction, prompt)


def describe_view(description_id: int, count: int) -> discord.ui.View:
    view = discord.ui.View(timeout=None)
    for which in [*(str(i + 1) for i in range(count)), "all"]:
        view.add_item(DescribeButton(description_id, which))
    return view


async def describe_attachment(interaction: AtelierInteraction, attachment: discord.Attachment) -> None:
    """Check, fetch and decode the image (the upload checks of bot/attachments.py), then caption it in a
    thread and answer with the suggestions and their buttons."""
    services = interaction.client.services
    # 1. Refusals first, before a byte is downloaded.
    captioner = services.captioner
    if captioner is None:
        raise InvalidRequest(NOT_CONFIGURED)
    await check_member_here(interaction)
    check_declared(attachment)
    # 2. Download, header check and bounded decode off the loop; a bad file is still an ephemeral refusal.
    data = await fetch(attachment)
    image = await asyncio.to_thread(decode_upload, data, DESCRIBE_PIXELS)
    shown = await presentation(interaction, image)
    if shown == "block":  # its captions could say what the image shows: none either
        raise NotAllowed("That image looks NSFW: it can't be described in this channel.")
    # 3. Captioning may take seconds on a real model: acknowledge first, then caption on the torch thread
    # between two steps of the render running there (Engine.side_call: it waits a step, not a render).
    await interaction.response.defer(thinking=True)
    prompts = await services.model_call(captioner.describe, image)
    description_id = await services.db.descriptions.add(interaction.guild_id, interaction.channel_id,
                                                        interaction.user.id, prompts)
    png = await asyncio.to_thread(encode_upload, image)
    await interaction.followup.send(describe_text(interaction.user.id, prompts),
                                    file=discord.File(io.BytesIO(png), "described.png",
                                                      spoiler=shown == "spoiler"),
                                    view=describe_view(description_id, len(prompts)),
                                    allowed_mentions=discord.AllowedMentions.none())


class Describe(commands.Cog):
    def __init__(self, bot: commands.Bot) -> None:
        self.bot = bot

    @app_commands.command(name="describe", description="Four prompts that describe an image")
    @app_commands.describe(image="The image to describe (PNG, JPEG or WebP)")
    async def describe(self, interaction: AtelierInteraction, image: discord.Attachment) -> None:
        await describe_attachment(interaction, image)


async def describe_message(interaction: AtelierInteraction, message: discord.Message) -> None:
    attachment = image_attachment(message)
    if attachment is None:
        raise InvalidRequest("That message has no image to describe.")
    await describe_attachment(interaction, attachment)


async def setup(bot: commands.Bot) -> None:
    bot.add_dynamic_items(DescribeButton)
    await bot.add_cog(Describe(bot))
    bot.tree.add_command(app_commands.ContextMenu(name=MENU_NAME, callback=describe_message))


async def teardown(bot: commands.Bot) -> None:
    bot.remove_dynamic_items(DescribeButton)
    bot.tree.remove_command(MENU_NAME, type=discord.AppCommandType.message)
