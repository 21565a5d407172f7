"""A member's own starting image, from `/imagine image:` or the "Imagine from this image" menu: the one
path from a Discord attachment to a queued img2img job.

Order matters. Everything that can refuse the member (ban, channel, words, NSFW, server caps, request
validation) runs first, on the request as it will be, before a byte is downloaded; then the header is
checked before a pixel is decoded; only an image that passed everything is stored. A refusal leaves
nothing behind: no blob, no job row.
"""

from __future__ import annotations

import asyncio
import dataclasses
import re
import secrets
from typing import TYPE_CHECKING

import discord

from bot.defaults import personal_draft
from bot.interaction import AtelierInteraction
from bot.jobflow import start_job
from bot.policy import check_request
from bot.wildcards import server_wildcards
from generation.errors import InvalidRequest
from generation.images import decode_upload, encode_upload
from generation.request import Kind
from generation.validate import MAX_SEED, RequestDraft, build_request, max_pixels

if TYPE_CHECKING:
    from storage.blobs import BlobStore

MAX_SOURCE_BYTES = 10 * 1024 * 1024
TOO_MANY_BYTES = f"That image is too large ({MAX_SOURCE_BYTES // 2**20} MB at most)."
# Stands in for the blob key while the checks run on the request before the download.
PENDING_UPLOAD = "pending-upload"
_IMAGE_NAME = re.compile(r"\.(png|jpe?g|webp|gif|bmp)$", re.I)


def image_attachment(message: discord.Message) -> discord.Attachment | None:
    """A message's first image attachment (the message menus start from it)."""
    for attachment in message.attachments:
        if (attachment.content_type or "").startswith("image/") or _IMAGE_NAME.search(attachment.filename):
            return attachment
    return None


def check_declared(attachment: discord.Attachment) -> None:
    """What Discord tells us about the file, before a byte is downloaded."""
    if attachment.size > MAX_SOURCE_BYTES:
        raise InvalidRequest(TOO_MANY_BYTES)
    if attachment.content_type and not attachment.content_type.startswith("image/"):
        raise InvalidRequest("The attachment must be an image (PNG, JPEG or WebP).")


async def fetch(attachment: discord.Attachment) -> bytes:
    """The attachment's bytes, refused when Discord's declared size was wrong."""
    try:
        data = await attachment.read()
    except discord.HTTPException as exc:  # an expired or deleted attachment URL
        raise InvalidRequest("I could not fetch that image from Discord; please attach it again.") from exc
    if len(data) > MAX_SOURCE_BYTES:  # the declared size was wrong
        raise InvalidRequest(TOO_MANY_BYTES)
    return data


def declared_size(attachment: discord.Attachment) -> tuple[int, int]:
    """What Discord says the image measures, for the checks before the download (the bytes decide
    later); a square when it does not say."""
    width, height = attachment.width or 0, attachment.height or 0
    return (width, height) if width > 0 and height > 0 else (512, 512)


def store_upload(blobs: BlobStore, data: bytes, fit_to: int) -> tuple[str, tuple[int, int]]:
    """Decode (header first, under the pixel cap), downscale to `fit_to` pixels and store; returns the
    blob key and the stored size. Blocking: run it in a thread."""
    image = decode_upload(data, fit_to)
    return blobs.put(encode_upload(image)), image.size


async def start_from_upload(interaction: AtelierInteraction, draft: RequestDraft,
                            attachment: discord.Attachment) -> int:
    """Check, fetch, store and queue an img2img job from `attachment`; returns the job id."""
    services = interaction.client.services
    # 1. What Discord tells us about the file.
    check_declared(attachment)
    # 2. Who, where, what and how much, on the request as it will be: refused before any download.
    draft = dataclasses.replace(draft, kind=Kind.IMG2IMG, source=PENDING_UPLOAD)
    draft = await personal_draft(interaction, draft)
    # Server wildcards draw with the seed: fix it now so the checked prompt is the one that renders.
    lists = await server_wildcards(services.db, interaction.guild_id)
    if draft.seed is None:
        draft = dataclasses.replace(draft, seed=secrets.randbelow(MAX_SEED + 1))
    planned = build_request(draft, services.registry, source_size=declared_size(attachment), wildcards=lists)
    await check_request(services, interaction, planned)
    # 3. Download; header check, bounded decode and downscale to the model's own limit, off the loop.
    data = await fetch(attachment)
    fit_to = max_pixels(services.registry.spec(planned.model).family)
    key, size = await asyncio.to_thread(store_upload, services.blobs, data, fit_to)
    # 4. The real request from the stored image; start_job checks it again (a ban may have landed
    # during the download) before it queues.
    request = build_request(dataclasses.replace(draft, source=key), services.registry, source_size=size,
                            wildcards=lists)
    return await start_job(interaction, request)
