"""The "Imagine from this image" message context menu: an img2img job from a message's attached image.
A context menu carries no options, so a modal asks for the prompt (prefilled from the job when the
message is one of our results) and the strength."""

from __future__ import annotations

import re
from typing import Any

import discord
from discord import app_commands
from discord.ext import commands

from bot.access import can_see, viewer_of
from bot.attachments import image_attachment, start_from_upload
from bot.errors import report_error
from bot.interaction import AtelierInteraction
from generation.errors import InvalidRequest
from generation.validate import IMG2IMG_STRENGTH, RequestDraft

MENU_NAME = "Imagine from this image"
_JOB_REF = re.compile(r"job `(\d{1,19})`")


class ImagineFromImage(discord.ui.Modal, title="Imagine from this image"):
    def __init__(self, attachment: discord.Attachment, prompt: str) -> None:
        super().__init__(timeout=15 * 60)
        self.attachment = attachment
        self.prompt: discord.ui.TextInput[ImagineFromImage] = discord.ui.TextInput(
            label="Prompt", style=discord.TextStyle.paragraph, default=prompt[:4000] or None, max_length=4000,
            placeholder="What the new picture should show (flags work: --ar 3:2 --seed 7)",
            custom_id="prompt")
        self.strength: discord.ui.TextInput[ImagineFromImage] = discord.ui.TextInput(
            label="Strength (0.05-1: how much to change it)", required=False, max_length=5,
            placeholder=f"{IMG2IMG_STRENGTH:g}", custom_id="strength")
        self.add_item(self.prompt)
        self.add_item(self.strength)

    async def on_submit(self, interaction: discord.Interaction[Any]) -> None:
        raw = (self.strength.value or "").strip()
        try:
            strength = float(raw) if raw else None
        except ValueError:
            raise InvalidRequest(f"Strength must be a number like 0.6, not `{raw[:10]}`.") from None
        await start_from_upload(interaction, RequestDraft(prompt=self.prompt.value, strength=strength),
                                self.attachment)

    async def on_error(self, interaction: AtelierInteraction, error: Exception,  # type: ignore[override]
                       item: Any = None) -> None:
        await report_error(interaction, error)


async def prompt_of(interaction: AtelierInteraction, message: discord.Message) -> str:
    """The job's prompt when the message is one of our results, else the message's text."""
    me = interaction.client.user
    match = _JOB_REF.search(message.content or "")
    if me is not None and message.author.id == me.id and match:
        job = await interaction.client.services.db.jobs.get(int(match.group(1)))
        # The prompt of a job the member may not see (private, another server's, a DM's) is not theirs
        # to prefill: the message text stands in for it.
        if job is not None and can_see(job, viewer_of(interaction)):
            return str(job.request.get("prompt", ""))
    return message.content or ""


async def imagine_from_image(interaction: AtelierInteraction, message: discord.Message) -> None:
    attachment = image_attachment(message)
    if attachment is None:
        raise InvalidRequest("That message has no image to start from.")
    await interaction.response.send_modal(ImagineFromImage(attachment, await prompt_of(interaction, message)))


async def setup(bot: commands.Bot) -> None:
    bot.tree.add_command(app_commands.ContextMenu(name=MENU_NAME, callback=imagine_from_image))


async def teardown(bot: commands.Bot) -> None:
    bot.tree.remove_command(MENU_NAME, type=discord.AppCommandType.message)
