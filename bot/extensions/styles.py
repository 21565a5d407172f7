"""/style save | list | remove: a server's named styles. Members use one with `--style name` in any prompt
(bot/styles.py expands it: the style's suffix and LoRA); its sample images are kept as blob keys for image
references once those exist. Names are unique per server; the author or a moderator removes a style; saves
and removals are audited."""

from __future__ import annotations

import asyncio
import io

import discord
from discord import app_commands
from discord.ext import commands

from bot.access import is_moderator, load_job
from bot.attachments import check_declared, fetch
from bot.interaction import AtelierInteraction
from bot.loras import lora_choices
from bot.references import register_named, unregister_named
from bot.standing import check_member_here
from bot.styles import style_choices
from generation.errors import InvalidRequest, NotAllowed, NotFound
from generation.images import decode_upload, encode_upload
from generation.styles import MAX_IMAGES, check_name, check_suffix, check_weight, style_sheet
from storage.blobs import BlobStore
from storage.styles import Style, StyleTaken

# Samples are references, not sources to render from: a megapixel keeps every detail a reference needs.
STYLE_PIXELS = 1024 * 1024
LIST_LIMIT = 25


def _guild(interaction: AtelierInteraction) -> int:
    if interaction.guild_id is None:
        raise app_commands.NoPrivateMessage()
    return interaction.guild_id


def _summary(style: Style) -> str:
    parts = [f"`{style.name}` by <@{style.user_id}>", f"{len(style.images)} image(s)"]
    if style.lora:
        parts.append(f"LoRA `{style.lora}` at {style.lora_weight:g}")
    if style.suffix:
        parts.append(f"“{style.suffix[:80]}”")
    return " — ".join(parts)


async def _job_images(interaction: AtelierInteraction, job_id: int) -> list[str]:
    """The blob keys of a job's images, if the member may see the job (the access rule of /job)."""
    await load_job(interaction, job_id)
    rows = await interaction.client.services.db.images.for_job(job_id)
    if not rows:
        raise InvalidRequest(f"Job `{job_id}` has no images to take as samples.")
    return [row.blob for row in rows]


def _store_samples(blobs: BlobStore, uploads: list[bytes]) -> list[str]:
    """Decode every upload first (header checks, bounded), then store them: a bad file stores nothing."""
    images = [decode_upload(data, STYLE_PIXELS) for data in uploads]
    return [blobs.put(encode_upload(image)) for image in images]


def _sheet(blobs: BlobStore, styles: list[Style]) -> bytes:
    rows = []
    for style in styles:
        images = []
        for key in style.images:
            try:
                images.append(blobs.open_image(key))
            except (OSError, ValueError):  # a file lost on disk: the row shows the others
                continue
        rows.append((style.name, images))
    return style_sheet(rows)


class Styles(commands.Cog):
    style = app_commands.Group(name="style", description="This server's named styles (use: --style name)",
                               guild_only=True)

    def __init__(self, bot: commands.Bot) -> None:
        self.bot = bot

    @style.command(name="save", description="Save a style from sample images (or a job), a LoRA and a suffix")
    @app_commands.describe(
        name="The style's name (letters, digits, - and _)", image1="A sample image", image2="A sample image",
        image3="A sample image", image4="A sample image", image5="A sample image",
        job="Take the samples from this job's images", lora="A LoRA from the library",
        weight="The LoRA's weight (default 1)", suffix="Words added to every prompt that uses the style")
    @app_commands.autocomplete(lora=lora_choices)
    async def save(self, interaction: AtelierInteraction, name: str, image1: discord.Attachment | None = None,
                   image2: discord.Attachment | None = None, image3: discord.Attachment | None = None,
                   image4: discord.Attachment | None = None, image5: discord.Attachment | None = None,
                   job: int | None = None, lora: str | None = None, weight: float = 1.0,
                   suffix: str | None = None) -> None:
        services = interaction.client.services
        guild_id = _guild(interaction)
        # 1. Every refusal before a byte is downloaded or stored.
        await check_member_here(interaction)
        name = check_name(name)
        taken = await services.db.styles.get(guild_id, name)
        if taken is not None:
            raise InvalidRequest(f"This server already has a style `{name}` (by <@{taken.user_id}>).")
        words = check_suffix(suffix)
        weight = check_weight(weight)
        if lora is not None:
            found = services.registry.loras.get(lora)
            if found is None or found.kind != "lora":
                raise InvalidRequest(f"There is no LoRA `{lora[:64]}` in the library (`/admin lora list`).")
        uploads = [a for a in (image1, image2, image3, image4, image5) if a is not None]
        from_job = await _job_images(interaction, job) if job is not None else []
        if not uploads and not from_job:
            raise InvalidRequest(f"A style needs sample images: attach 1-{MAX_IMAGES} or give a job id.")
        if len(uploads) + len(from_job) > MAX_IMAGES:
            raise InvalidRequest(f"A style holds at most {MAX_IMAGES} sample images "
                                 f"({len(from_job)} from the job + {len(uploads)} attached).")
        for attachment in uploads:
            check_declared(attachment)
        # 2. Downloads can take longer than Discord's 3 s: acknowledge first (ephemeral, as the answer).
        await interaction.response.defer(ephemeral=True, thinking=True)
        data = [await fetch(a) for a in uploads]
        keys = from_job + await asyncio.to_thread(_store_samples, services.blobs, data)
        # 3. The row; the UNIQUE index settles two saves of one name at once.
        try:
            style = await services.db.styles.add(guild_id, name, interaction.user.id, suffix=words, lora=lora,
                                                 lora_weight=weight, images=keys, source_job_id=job)
        except StyleTaken:
            raise InvalidRequest(f"This server already has a style `{name}`.") from None
        await services.db.audit.record(guild_id, interaction.user.id, "style.save", name, {
            "images": list(style.images), "lora": lora, "weight": weight, "suffix": words, "job": job})
        await interaction.followup.send(f"Saved style {_summary(style)}. Use it with `--style {name}`.",
                                        ephemeral=True)

    @style.command(name="list", description="This server's styles, with a sheet of their samples")
    async def list_styles(self, interaction: AtelierInteraction) -> None:
        services = interaction.client.services
        guild_id = _guild(interaction)
        styles = await services.db.styles.list(guild_id, limit=LIST_LIMIT)
        if not styles:
            await interaction.response.send_message(
                "This server has no styles yet; `/style save` makes one.", ephemeral=True)
            return
        total = await services.db.styles.count(guild_id)
        sheet = await asyncio.to_thread(_sheet, services.blobs, styles)
        lines = [f"• {_summary(s)}" for s in styles]
        more = f"\n…and {total - len(styles)} more." if total > len(styles) else ""
        text = (f"{total} style(s); use one with `--style name`:\n" + "\n".join(lines))[:1900] + more
        await interaction.response.send_message(text, file=discord.File(io.BytesIO(sheet), "styles.png"),
                                                ephemeral=True,
                                                allowed_mentions=discord.AllowedMentions.none())

    @style.command(name="remove", description="Remove a style (its author or a moderator)")
    @app_commands.describe(name="The style to remove")
    @app_commands.autocomplete(name=style_choices)
    async def remove(self, interaction: AtelierInteraction, name: str) -> None:
        services = interaction.client.services
        guild_id = _guild(interaction)
        style = await services.db.styles.get(guild_id, name.strip().lower())
        if style is None:
            raise NotFound(f"This server has no style `{name[:32]}`.")
        if style.user_id != interaction.user.id and not is_moderator(interaction):
            raise NotAllowed("Only the style's author or a moderator can remove it.")
        if await services.db.styles.remove(guild_id, style.name):
            await services.db.audit.record(guild_id, interaction.user.id, "style.remove", style.name,
                                           {"author": style.user_id, "images": list(style.images)})
        await interaction.response.send_message(f"Removed style `{style.name}`.", ephemeral=True)


async def style_reference(interaction: AtelierInteraction, name: str) -> bytes | None:
    """`--sref @name` (bot/references.py): the style's first sample image; None when the server has no
    style of that name (another resolver may know it)."""
    if interaction.guild_id is None:
        return None
    services = interaction.client.services
    style = await services.db.styles.get(interaction.guild_id, name.strip().lower())
    if style is None or not style.images:
        return None
    return await asyncio.to_thread(services.blobs.read, style.images[0])


async def setup(bot: commands.Bot) -> None:
    register_named(style_reference)
    await bot.add_cog(Styles(bot))


async def teardown(bot: commands.Bot) -> None:
    unregister_named(style_reference)
