"""Reference images for `--sref` / `--cref` / `--oref` (and /blend): from the member's attachment, a URL of an
image already on Discord (its CDN, or the Discord-compatible server the bot talks to), a job of ours (`42` or
`42.3`: image 3 of job 42), or a name another module resolves (`@name`, see register_named).

Checked like an img2img source (bot/attachments.py): size before the download, content type, then the header
and a bounded decode; and the image NSFW check where the server's policy would refuse an NSFW prompt. The
request is validated with the references pending before any byte is fetched, so a model without an
IP-Adapter, a ban or a bad weight costs no download; a refusal stores nothing.
"""

from __future__ import annotations

import asyncio
import dataclasses
import re
from collections.abc import Awaitable, Callable, Mapping
from typing import TYPE_CHECKING
from urllib.parse import urlsplit

import aiohttp
import discord

from bot.access import can_see, viewer_of
from bot.attachments import MAX_SOURCE_BYTES, TOO_MANY_BYTES
from bot.defaults import personal_draft
from bot.interaction import AtelierInteraction
from bot.policy import channel_is_age_restricted, check_request, guild_config
from generation.errors import InvalidRequest, NotFound
from generation.images import decode_upload, encode_upload
from generation.references import STYLE
from generation.validate import RequestDraft, build_request, max_pixels, reference_flags

if TYPE_CHECKING:
    from bot.services import Services
    from generation.request import RenderRequest

# Where an image "already on the server" may come from: Discord's CDN hosts, and the API base's origin when
# the bot talks to a Discord-compatible server (the sandbox serves attachments under /cdn/attachments/).
CDN_HOSTS = ("cdn.discordapp.com", "media.discordapp.net")
_ATTACHMENT_PATH = re.compile(r"^(?:/cdn)?/attachments/\d{1,20}/\d{1,20}/[^/]{1,200}$")
_JOB_IMAGE = re.compile(r"^(?:job:?)?(\d{1,19})(?:[.:#](\d))?$", re.I)
ATTACHMENT = "attachment"  # what `--sref attachment` (or the command's `reference:` option) names
# Stands in for the blob keys while the checks run on the request before the downloads.
_PENDING = "pending-reference"
_FETCH_TIMEOUT_S = 30

# `@name` resolvers (server styles): each returns the image bytes, or None when the name is not theirs.
NamedResolver = Callable[[AtelierInteraction, str], Awaitable[bytes | None]]
_named_resolvers: list[NamedResolver] = []


def register_named(resolver: NamedResolver) -> None:
    """Let `--sref @name` reach `resolver` (e.g. /style's saved styles). Resolvers are asked in order."""
    if resolver not in _named_resolvers:
        _named_resolvers.append(resolver)


def unregister_named(resolver: NamedResolver) -> None:
    if resolver in _named_resolvers:
        _named_resolvers.remove(resolver)


async def reference_bytes(interaction: AtelierInteraction, raw: str,
                          attachments: Mapping[str, discord.Attachment] | None = None) -> bytes:
    """The image bytes `raw` names (see the module docstring), unchecked beyond their size. Raises
    InvalidRequest with what the member can do about it."""
    raw = raw.strip().strip("<>")
    attachment = (attachments or {}).get(raw.lower())
    if attachment is not None:
        return await _read_attachment(attachment)
    if raw.lower().startswith(ATTACHMENT):
        raise InvalidRequest(f"`{raw[:30]}` names an attachment: attach the image in the command's "
                             "`reference` option.")
    if raw.startswith("@"):
        for resolver in list(_named_resolvers):
            data = await resolver(interaction, raw[1:])
            if data is not None:
                return data
        raise InvalidRequest(f"There is no style `{raw[:40]}` on this server.")
    job = _JOB_IMAGE.match(raw)
    if job is not None:
        return await _job_image(interaction, int(job.group(1)), int(job.group(2) or 1) - 1)
    return await _fetch_url(interaction, raw)


async def store_reference(services: Services, interaction: AtelierInteraction, data: bytes,
                          model: str) -> str:
    """Decode (header first, bounded), downscale and NSFW-check one reference image, then store it; the blob
    key. Nothing is stored when it is refused."""
    if len(data) > MAX_SOURCE_BYTES:
        raise InvalidRequest(TOO_MANY_BYTES)
    fit_to = max_pixels(services.registry.spec(model).family)
    image = await asyncio.to_thread(decode_upload, data, fit_to)
    if not await _nsfw_allowed(services, interaction) and await services.looks_nsfw(model, image):
        raise InvalidRequest("That reference image looks NSFW, which this server does not allow here.")
    return await asyncio.to_thread(services.blobs.put, encode_upload(image))


async def plan_references(interaction: AtelierInteraction, draft: RequestDraft,
                          attachments: Mapping[str, discord.Attachment],
                          named: list[tuple[str, str]] | None = None) -> RequestDraft:
    """Fetch, check and store the images `draft`'s prompt names (`--sref` ... or the `reference` attachment
    alone, which means `--sref`), or those `named` as (role, attachment name) by a command like /blend;
    returns the draft carrying their blob keys. Every check on the request runs first, with the references
    pending."""
    services = interaction.client.services
    given = named is not None
    named = list(named) if named is not None else reference_flags(draft.prompt)
    if not named and ATTACHMENT in attachments:
        named = [(STYLE, ATTACHMENT)]
        draft = dataclasses.replace(draft, prompt=f"{draft.prompt} --sref {ATTACHMENT}")
    if not named:
        return draft
    pending = dataclasses.replace(draft, references=tuple((role, _PENDING) for role, _ in named))
    if given and reference_flags(draft.prompt):
        raise InvalidRequest("Name no other reference images in this prompt.")
    # Planned with the member's defaults (their model may be the one without an adapter); the draft goes on
    # without them, for the caller's own path to apply as it does for every job.
    planned: RenderRequest = build_request(await personal_draft(interaction, pending), services.registry)
    await check_request(services, interaction, planned)
    keys = []
    for role, raw in named:
        data = await reference_bytes(interaction, raw, attachments)
        keys.append((role, await store_reference(services, interaction, data, planned.model)))
    return dataclasses.replace(draft, references=tuple(keys))


async def _read_attachment(attachment: discord.Attachment) -> bytes:
    if attachment.size > MAX_SOURCE_BYTES:
        raise InvalidRequest(TOO_MANY_BYTES)
    if attachment.content_type and not attachment.content_type.startswith("image/"):
        raise InvalidRequest("A reference must be an image (PNG, JPEG or WebP).")
    try:
        return await attachment.read()
    except discord.HTTPException as exc:
        raise InvalidRequest("I could not fetch that image from Discord; please attach it again.") from exc


async def _job_image(interaction: AtelierInteraction, job_id: int, index: int) -> bytes:
    services = interaction.client.services
    job = await services.db.jobs.get(job_id)
    if job is None or not can_see(job, viewer_of(interaction)):
        raise NotFound(f"Job {job_id} does not exist here.")
    row = await services.db.images.get_by_index(job_id, index)
    if row is None or row.deleted:
        raise InvalidRequest(f"Job {job_id} has no image {index + 1}.")
    try:
        return await asyncio.to_thread(services.blobs.read, row.blob)
    except KeyError:
        raise InvalidRequest(f"The image of job {job_id} is no longer on the server.") from None


def allowed_url(url: str, api_base: str | None) -> bool:
    """Only attachment URLs of Discord's CDN (or of the Discord-compatible server in use): the bot fetches
    nothing else (no requests to arbitrary hosts on a member's behalf)."""
    parts = urlsplit(url)
    if parts.scheme not in ("https", "http") or not _ATTACHMENT_PATH.match(parts.path):
        return False
    if parts.scheme == "https" and parts.hostname in CDN_HOSTS:
        return True
    if api_base:
        base = urlsplit(api_base)
        return (parts.scheme, parts.netloc) == (base.scheme, base.netloc)
    return False


async def _fetch_url(interaction: AtelierInteraction, url: str) -> bytes:
    services = interaction.client.services
    if not allowed_url(url, services.settings.discord_api_base):
        raise InvalidRequest("A reference must be an attached image, a Discord image link, a job (`42` or "
                             "`42.3`) or a saved style (`@name`).")
    try:
        timeout = aiohttp.ClientTimeout(total=_FETCH_TIMEOUT_S)
        async with aiohttp.ClientSession(timeout=timeout) as session, session.get(url) as response:
            if response.status != 200:
                raise InvalidRequest("I could not fetch that image link (it may have expired); attach the "
                                     "image instead.")
            if response.content_length is not None and response.content_length > MAX_SOURCE_BYTES:
                raise InvalidRequest(TOO_MANY_BYTES)
            # Stop one chunk past the cap: a server that did not say the size cannot make us hold more.
            data = b""
            async for chunk in response.content.iter_chunked(64 * 1024):
                data += chunk
                if len(data) > MAX_SOURCE_BYTES:
                    break
    except (aiohttp.ClientError, TimeoutError) as exc:
        raise InvalidRequest("I could not fetch that image link; attach the image instead.") from exc
    if len(data) > MAX_SOURCE_BYTES:
        raise InvalidRequest(TOO_MANY_BYTES)
    return data


async def _nsfw_allowed(services: Services, interaction: AtelierInteraction) -> bool:
    """Whether this server would take an NSFW prompt here (the same policy, applied to the image)."""
    if interaction.guild_id is None:
        return False
    config = await guild_config(services, interaction.guild_id)
    if config.nsfw == "block":
        return False
    return config.nsfw != "age_restricted" or channel_is_age_restricted(interaction)
