"""/gallery (an ephemeral, paged contact sheet of a member's images: ◀ ▶, a select to open one image with
its result buttons, prompt search, favourites) and /export (your prompts and seeds as a file). The ⭐ and
🗑 under an opened image are bot/buttons.py's FavouriteButton and DeleteButton.

Privacy: a member sees another member's images only if they were made publicly (not in private mode)
in the same guild; guilds never see each other's images. Paging state lives in the custom_id (owner,
page, favourites, search text, and on ◀ ▶ the id at the edge of the current page, so the next page is a
seek) and everything else comes from the database, so a gallery keeps working after a restart.
An image whose file is missing or damaged shows as a placeholder cell; it never breaks the page.
"""

from __future__ import annotations

import asyncio
import csv
import io
import json
import logging
import re
from contextlib import aclosing
from dataclasses import asdict
from dataclasses import fields as dataclass_fields
from typing import Any, Literal

import discord
from discord import app_commands
from discord.ext import commands
from PIL import Image, ImageFilter, UnidentifiedImageError

from bot.access import gallery_scope, load_job, viewer_of
from bot.buttons import Acting, image_view
from bot.interaction import AtelierInteraction
from bot.policy import channel_is_age_restricted
from bot.presenter import fit_upload, short_prompt
from bot.results import guild_upload_limit
from generation.errors import NotFound
from generation.request import Kind, RenderRequest
from generation.sheets import sheet_png
from storage.gallery import ExportRow, GalleryFilter, GalleryStore
from storage.images import ImageRow

log = logging.getLogger(__name__)

PER_PAGE = 9
MAX_SEARCH = 50  # keeps the paging custom_id under Discord's 100 characters
THUMB = 256
EXPORT_MAX_ROWS = 10_000  # the newest this many images; beyond that /export says it was capped
# A file a member cannot open, or a bad blob, must not fail the page: these are what PIL and the blob
# store raise for a missing (KeyError), unreadable or truncated (OSError, SyntaxError) or odd file.
BROKEN_IMAGE = (KeyError, OSError, SyntaxError, ValueError, UnidentifiedImageError)

_STATE = r"(?P<owner>[0-9]{1,20}):(?P<page>[0-9]{1,5}):(?P<fav>[01]):(?P<q>.{0,50})"


def _state_id(kind: str, owner: int, page: int, favourites: bool, search: str) -> str:
    cid = f"atelier:{kind}:{owner}:{page}:{int(favourites)}:{search[:MAX_SEARCH]}"
    assert len(cid) <= 100, cid
    return cid


def _b36(n: int) -> str:
    digits = "0123456789abcdefghijklmnopqrstuvwxyz"
    out = ""
    while True:
        n, r = divmod(n, 36)
        out = digits[r] + out
        if n == 0:
            return out


def views_of(interaction: AtelierInteraction) -> GalleryStore:
    return interaction.client.services.db.gallery


def gallery_filter(interaction: AtelierInteraction, owner_id: int, favourites: bool,
                   search: str) -> GalleryFilter:
    """What the viewer may browse of `owner_id`'s gallery here (bot.access.gallery_scope); another
    user's gallery in a DM does not exist for them (a crafted paging custom_id included)."""
    public_only = gallery_scope(viewer_of(interaction), owner_id)
    if public_only is None:
        raise NotFound("No images to show here.")
    return GalleryFilter(guild_id=interaction.guild_id, owner_id=owner_id,
                         public_only=public_only, favourites=favourites,
                         search=search[:MAX_SEARCH], viewer_id=interaction.user.id)


# -- pages -----------------------------------------------------------------------------------------

def _thumbnail(blobs: Any, row: ImageRow, hide: bool) -> Image.Image | None:
    """The cell's picture, or None (a placeholder cell) when the image file is missing or damaged."""
    try:
        with Image.open(io.BytesIO(blobs.thumbnail(row.blob, THUMB))) as im:
            im.load()
            image = im.convert("RGB")
    except BROKEN_IMAGE as exc:
        log.warning("image %s (blob %s) cannot be shown in a gallery: %r", row.id, row.blob, exc)
        return None
    # A flagged image is blurred beyond recognition outside age-restricted channels.
    return image.filter(ImageFilter.GaussianBlur(24)) if hide else image


def _sheet(blobs: Any, rows: list[ImageRow], first_number: int, hide_nsfw: bool) -> bytes:
    return sheet_png([_thumbnail(blobs, r, hide_nsfw and r.nsfw) for r in rows], first_number=first_number)


async def render_page(interaction: AtelierInteraction, f: GalleryFilter, page: int, *,
                      before: int | None = None, after: int | None = None,
                      ) -> tuple[str, discord.File | None, discord.ui.View | None]:
    """The content, contact sheet and controls of one gallery page (clamped to the last page).
    `before` / `after`: the cursor a ◀ ▶ button carries (see GalleryStore.sheet)."""
    shown = await views_of(interaction).sheet(f, page, per_page=PER_PAGE, before=before, after=after)
    total, rows, page, pages = shown.total, shown.rows, shown.page, shown.pages
    what = "your images" if not f.public_only else f"images of <@{f.owner_id}>"
    if f.favourites and not f.public_only:
        what = "your favourites"  # starred by you, from any member
    filters = []
    if f.search:
        filters.append(f"matching “{discord.utils.escape_markdown(f.search)}”")
    if f.favourites and f.public_only:
        filters.append("that you starred")
    suffix = f" ({', '.join(filters)})" if filters else ""
    if not rows:
        return f"No images{suffix} to show here.", None, None
    first = page * PER_PAGE + 1
    blobs = interaction.client.services.blobs
    png = await asyncio.to_thread(_sheet, blobs, rows, first, not channel_is_age_restricted(interaction))
    content = (f"**Gallery** — {what}{suffix} · page {page + 1}/{pages} · {total} image"
               f"{'s' if total != 1 else ''}, newest first")
    view = discord.ui.View(timeout=None)
    view.add_item(GalleryButton(f.owner_id, max(page - 1, 0), f.favourites, f.search, label="◀",
                                disabled=page == 0, tag="galp", cursor=rows[0].id))
    view.add_item(GalleryButton(f.owner_id, page + 1, f.favourites, f.search, label="▶",
                                disabled=page >= pages - 1, tag="galn", cursor=rows[-1].id))
    options = [
        discord.SelectOption(
            label=f"{first + i}. {short_prompt(r.prompt)[:90] or '(no prompt)'}",
            value=str(r.id),
            description=f"job {r.job_id} · image {r.index + 1} · seed {r.seed}",
        )
        for i, r in enumerate(rows)
    ]
    view.add_item(GallerySelect(f.owner_id, page, f.favourites, f.search, options))
    return content, discord.File(io.BytesIO(png), filename=f"gallery_{page + 1}.png"), view


class GalleryButton(Acting, discord.ui.DynamicItem[discord.ui.Button[Any]],
                    template=re.compile(r"atelier:(?P<tag>galp|galn)(?:\.(?P<cur>[0-9a-z]{1,13}))?:" + _STATE,
                                        re.S)):
    """◀ / ▶: the target page is in the custom_id, and the id of the image at the near edge of the
    current page (base 36, after the tag), from which the target page is a keyset seek. Ids made before
    the cursor existed (no ".cursor") still work: they page by offset."""

    def __init__(self, owner: int, page: int, favourites: bool, search: str, *, label: str = "▶",
                 disabled: bool = False, tag: str = "galn", cursor: int | None = None) -> None:
        custom_id = _state_id(tag, owner, page, favourites, search)
        if cursor is not None:
            with_cursor = custom_id.replace(f":{tag}:", f":{tag}.{_b36(cursor)}:", 1)
            if len(with_cursor) <= 100:  # else (a very long search) this button pages by offset
                custom_id = with_cursor
            else:
                cursor = None
        super().__init__(discord.ui.Button(label=label, style=discord.ButtonStyle.secondary,
                                           disabled=disabled, custom_id=custom_id))
        self.owner, self.page, self.favourites, self.search = owner, page, favourites, search
        self.tag, self.cursor = tag, cursor

    @classmethod
    async def from_custom_id(cls, interaction: discord.Interaction[Any], item: discord.ui.Item[Any],
                             match: re.Match[str], /) -> GalleryButton:
        return cls(int(match["owner"]), int(match["page"]), match["fav"] == "1", match["q"],
                   label=str(getattr(item, "label", None) or "▶"), tag=match["tag"],
                   cursor=int(match["cur"], 36) if match["cur"] else None)

    async def act(self, interaction: AtelierInteraction) -> None:
        f = gallery_filter(interaction, self.owner, self.favourites, self.search)
        # ▶ reads the images older than the last one shown; ◀ the ones newer than the first.
        content, file, view = await render_page(
            interaction, f, self.page, before=self.cursor if self.tag == "galn" else None,
            after=self.cursor if self.tag == "galp" else None)
        await interaction.response.edit_message(content=content, attachments=[file] if file else [],
                                                view=view)


class GallerySelect(Acting, discord.ui.DynamicItem[discord.ui.Select[Any]],
                    template=re.compile(r"atelier:galsel:" + _STATE, re.S)):
    """Open one image of the page with its result buttons."""

    def __init__(self, owner: int, page: int, favourites: bool, search: str,
                 options: list[discord.SelectOption] | None = None) -> None:
        super().__init__(discord.ui.Select(
            placeholder="Open an image…", options=options or [discord.SelectOption(label="-", value="0")],
            custom_id=_state_id("galsel", owner, page, favourites, search)))
        self.owner = owner

    @classmethod
    async def from_custom_id(cls, interaction: discord.Interaction[Any], item: discord.ui.Item[Any],
                             match: re.Match[str], /) -> GallerySelect:
        return cls(int(match["owner"]), int(match["page"]), match["fav"] == "1", match["q"])

    async def act(self, interaction: AtelierInteraction) -> None:
        data: dict[str, Any] = dict(interaction.data or {})
        values = data.get("values") or []
        image_id = int(values[0]) if values and str(values[0]).isdigit() else 0
        await open_image(interaction, image_id)


def _size_of(job: Any) -> tuple[int, int] | None:
    # The image's size is its job's: Make Square is offered for non-square images only.
    if job is None:
        return None
    request = RenderRequest.from_json(job.request)
    return request.width, request.height


async def open_image(interaction: AtelierInteraction, image_id: int) -> None:
    services = interaction.client.services
    # Checked again here: a select's values come from the client and could name any image.
    row = await views_of(interaction).visible(image_id, interaction.guild_id, interaction.user.id)
    if row is None:
        raise NotFound("That image is not available.")
    job = await load_job(interaction, row.job_id)  # the one visibility rule (DM images: owner only)
    kind = Kind(job.kind) if job is not None and job.kind in Kind._value2member_map_ else Kind.TXT2IMG
    limit = guild_upload_limit(interaction.client, interaction.guild_id)

    def readable() -> tuple[bytes, str]:
        data = services.blobs.read(row.blob)
        with Image.open(io.BytesIO(data)) as im:
            im.load()  # a damaged file must be refused here, not sent to the member as a broken upload
        return fit_upload(data, limit)

    try:
        data, ext = await asyncio.to_thread(readable)
    except BROKEN_IMAGE as exc:
        log.warning("image %s (blob %s) cannot be opened: %r", row.id, row.blob, exc)
        raise NotFound("That image's file is missing or damaged, so it cannot be shown.") from None
    spoiler = row.nsfw and not channel_is_age_restricted(interaction)
    star = " ⭐" if await services.db.images.starred(interaction.user.id, [row.id]) else ""
    content = (f"**{short_prompt(row.prompt)}** — <@{row.user_id}> · job `{row.job_id}` · image "
               f"{row.index + 1} · seed {row.seed}{star}")
    await interaction.response.send_message(
        content, file=discord.File(io.BytesIO(data), filename=f"atelier_{row.job_id}_{row.index + 1}.{ext}",
                                   spoiler=spoiler),
        view=image_view(row.job_id, kind, row.index, size=_size_of(job)), ephemeral=True)


# -- commands --------------------------------------------------------------------------------------

class Gallery(commands.Cog):
    def __init__(self, bot: commands.Bot) -> None:
        self.bot = bot

    @app_commands.command(name="gallery", description="Browse images as contact sheets")
    @app_commands.describe(user="Whose images (default: yours)", search="Words the prompt must contain",
                           favourites="Only favourites")
    async def gallery(self, interaction: AtelierInteraction, user: discord.User | None = None,
                      search: app_commands.Range[str, 1, MAX_SEARCH] | None = None,
                      favourites: bool = False) -> None:
        owner = (user or interaction.user).id
        f = gallery_filter(interaction, owner, favourites, search or "")
        await interaction.response.defer(ephemeral=True, thinking=True)
        content, file, view = await render_page(interaction, f, 0)
        kwargs: dict[str, Any] = {"ephemeral": True}
        if file is not None:
            kwargs["file"] = file
        if view is not None:
            kwargs["view"] = view
        await interaction.followup.send(content, **kwargs)

    @app_commands.command(name="export", description="Your prompts and seeds in this server, as a file")
    @app_commands.describe(format="File format")
    async def export(self, interaction: AtelierInteraction,
                     format: Literal["csv", "json"] = "csv") -> None:
        await interaction.response.defer(ephemeral=True, thinking=True)
        limit = guild_upload_limit(interaction.client, interaction.guild_id)
        data, count, capped = await build_export(views_of(interaction), interaction.guild_id,
                                                 interaction.user.id, format, max_bytes=limit)
        if count == 0:
            await interaction.followup.send("You have no images here to export.", ephemeral=True)
            return
        text = f"{count} images: prompts, seeds and settings."
        if capped:
            text += (f" Capped: these are your newest {count} (an export holds at most "
                     f"{EXPORT_MAX_ROWS:,} images and must fit this server's upload limit).")
        await interaction.followup.send(
            text, ephemeral=True, file=discord.File(io.BytesIO(data), filename=f"atelier_export.{format}"))


def _export_lines(rows: list[ExportRow], format: str) -> list[bytes]:
    """One encoded line per row (a CSV record, or a JSON object without the list's punctuation)."""
    if format == "json":
        return [json.dumps(asdict(r), ensure_ascii=False).encode() for r in rows]
    buf = io.StringIO()
    writer = csv.writer(buf)
    lines = []
    for r in rows:
        writer.writerow(asdict(r).values())
        lines.append(buf.getvalue().encode())
        buf.seek(0)
        buf.truncate()
    return lines


async def build_export(store: GalleryStore, guild_id: int | None, user_id: int, format: str, *,
                       max_bytes: int, max_rows: int | None = None) -> tuple[bytes, int, bool]:
    """(file, rows in it, capped): the member's newest images, at most max_rows (EXPORT_MAX_ROWS by
    default) and max_bytes, oldest first. Rows stream from SQLite newest first in chunks, are encoded
    off the event loop chunk by chunk, and the stream stops at the cap, so memory stays bounded by
    the file itself."""
    max_rows = EXPORT_MAX_ROWS if max_rows is None else max_rows
    if format == "json":
        head, sep, tail = b"[\n", b",\n", b"\n]\n"
    else:
        buf = io.StringIO()
        csv.writer(buf).writerow(field.name for field in dataclass_fields(ExportRow))
        head, sep, tail = buf.getvalue().encode(), b"", b""
    lines: list[bytes] = []
    size = len(head) + len(tail)
    capped = False
    async with aclosing(store.export(guild_id, user_id)) as chunks:
        async for chunk in chunks:
            for line in await asyncio.to_thread(_export_lines, chunk, format):
                if len(lines) >= max_rows or size + len(line) + len(sep) > max_bytes:
                    capped = True
                    break
                lines.append(line)
                size += len(line) + len(sep)
            if capped:
                break
    lines.reverse()  # read newest first so the cap keeps the newest; the file lists oldest first
    return head + sep.join(lines) + tail, len(lines), capped


async def setup(bot: commands.Bot) -> None:
    await bot.add_cog(Gallery(bot))
    bot.add_dynamic_items(GalleryButton, GallerySelect)
