"""A finished job as a message: its image (the stored grid, rebuilt from the images when the grid file
is gone), shown as the channel allows under the guild's NSFW policy, within the server's upload limit,
with the buttons under it. The one builder behind delivery, /job and the gallery's uploads."""

from __future__ import annotations

import asyncio
import io
import logging
from typing import TYPE_CHECKING

import discord
from PIL import Image

from bot import buttons, presenter
from bot.access import load_job
from bot.policy import channel_is_age_restricted, channel_open, nsfw_presentation
from bot.reply import reply
from generation.images import make_grid
from generation.request import RenderRequest
from storage.blobs import BlobStore
from storage.errors import CorruptBlob

if TYPE_CHECKING:
    from bot.client import AtelierBot
    from bot.interaction import AtelierInteraction
    from bot.services import Services
    from storage.jobs import JobRow

log = logging.getLogger(__name__)


async def final_message(bot: AtelierBot, job: JobRow, *, upload_limit: int | None = None,
                        age_restricted: bool | None = None) -> presenter.Shown:
    """The job's final state as a message. `age_restricted` says where it will be shown (/job answers
    in any channel); by default, the job's own channel."""
    request = RenderRequest.from_json(job.request)
    if job.status == "done":
        services = bot.services
        rows = await services.db.images.for_job(job.id)
        if age_restricted is None:
            channel = bot.get_channel(job.channel_id) if job.channel_id else None
            age_restricted = bool(channel is not None and getattr(channel, "is_nsfw", lambda: False)())
        how = await nsfw_presentation(services, job.guild_id, age_restricted, request,
                                      any(row.nsfw for row in rows))
        if how == "block":
            return presenter.blocked(job.id, request, job.user_id)
        try:
            png = await result_png(services, job.id)
        except ImageFileMissing as exc:
            # No retry can bring the file back: say so, and the delivery settles instead of failing
            # again at every sweep.
            log.warning("job %s cannot be shown: %s", job.id, exc)
            return presenter.missing(job.id, request, job.user_id)
        limit = upload_limit if upload_limit is not None else guild_upload_limit(bot, job.guild_id)
        image, ext = await asyncio.to_thread(presenter.fit_upload, png, limit)
        view = buttons.result_view(job.id, request.count, request.kind, (request.width, request.height))
        return presenter.result(job.id, request, job.user_id, image, view, spoiler=how == "spoiler",
                                ext=ext)
    if job.status == "failed":
        return presenter.failed(request, job.user_id, job.error or "unknown error")
    return presenter.cancelled(request, job.user_id)


def guild_upload_limit(bot: AtelierBot, guild_id: int | None) -> int:
    """Bytes per file the guild accepts (it grows with server boosts)."""
    guild = bot.get_guild(guild_id) if guild_id is not None else None
    return guild.filesize_limit if guild is not None else discord.utils.DEFAULT_FILE_SIZE_LIMIT_BYTES


async def result_png(services: Services, job_id: int) -> bytes:
    """The job's grid (or single image), checked against its content address. A grid that is gone or
    damaged is rebuilt from the images; raises ImageFileMissing when an image itself is."""
    job = await services.db.jobs.get(job_id)
    if job is not None and job.grid_blob is not None:
        try:
            return await asyncio.to_thread(_read_image, services.blobs, job.grid_blob)
        except ImageFileMissing as exc:
            log.warning("job %s: %s; rebuilding the grid from its images", job_id, exc)
    # Jobs finished before grids were stored, or single images: build from the images.
    rows = sorted(await services.db.images.for_job(job_id), key=lambda r: r.index)
    if not rows:
        raise ImageFileMissing(f"job {job_id} has no stored images")
    datas = [await asyncio.to_thread(_read_image, services.blobs, row.blob) for row in rows]
    if len(datas) == 1:
        return datas[0]
    return await asyncio.to_thread(_grid_png, datas)


class ImageFileMissing(Exception):
    """A result's image file is gone from the data dir or no longer matches its content address."""


def _read_image(blobs: BlobStore, key: str) -> bytes:
    try:
        return blobs.read_verified(key)
    except KeyError:
        raise ImageFileMissing(f"image file {key} is missing") from None
    except CorruptBlob:
        raise ImageFileMissing(f"image file {key} is damaged") from None


def _grid_png(datas: list[bytes]) -> bytes:
    images = [Image.open(io.BytesIO(d)).convert("RGB") for d in datas]
    grid = make_grid(images)
    buf = io.BytesIO()
    grid.save(buf, format="PNG")
    return buf.getvalue()


async def show_job(interaction: AtelierInteraction, job_id: int, *, ephemeral: bool = False) -> None:
    """Answer with a past job as /job shows it: its result with working buttons, or its state while it
    is not done. The access rule first (a job the viewer may not see does not exist). `ephemeral`: always
    only for the viewer (/lineage opens a node this way), else only when the job or channel asks for it."""
    job = await load_job(interaction, job_id)
    bot = interaction.client
    request = RenderRequest.from_json(job.request)
    if job.status != "done":
        entry = bot.services.scheduler.entry(job.id)
        if entry is not None:
            text = presenter.queued(request, job.user_id, entry).content
        else:
            text = f"{presenter.headline(request, job.user_id)} ({job.status})"
        await reply(interaction, text, ephemeral=True)
        return
    # Shown as this channel allows, not as the job's own channel did: an image that was plain in an
    # age-restricted channel is spoilered or hidden here under the guild's NSFW policy.
    shown = await final_message(bot, job, age_restricted=channel_is_age_restricted(interaction))
    # A private job is only ever shown to its owner, ephemerally; so is anything asked for in a
    # channel the moderators closed to the bot.
    ephemeral = ephemeral or job.private or not await channel_open(bot.services, interaction)
    await interaction.response.send_message(shown.content, files=shown.discord_files(),
                                            view=shown.view or discord.utils.MISSING,
                                            ephemeral=ephemeral)
