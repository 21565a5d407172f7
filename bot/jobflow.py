"""Starting a job from any entry point (slash command, button, modal, context menu): the moderation
checks, submission to the scheduler, the immediate public "queued" reply, and recording where the job's
message lives so its updates and result can find it later (even after a restart)."""

from __future__ import annotations

import dataclasses
import logging
import time
from typing import TYPE_CHECKING

import discord

from bot import presenter
from bot.defaults import personal_draft
from bot.policy import check_request
from generation.request import Kind, RenderRequest
from generation.scheduler import JobOwner
from generation.validate import RequestDraft, build_request

if TYPE_CHECKING:
    from bot.interaction import AtelierInteraction

log = logging.getLogger(__name__)

# Discord interaction tokens live 15 minutes; a little margin keeps us from racing the expiry.
TOKEN_LIFETIME_S = 15 * 60
TOKEN_MARGIN_S = 30
DEFAULT_GRID = 4


async def start_job(interaction: AtelierInteraction, request: RenderRequest, *,
                    parent_job_id: int | None = None, parent_index: int | None = None) -> int:
    """Check, queue and announce a job; returns its id. Domain errors propagate to the error handler
    before anything is queued."""
    bot = interaction.client
    services = bot.services
    # 1. Moderation and limits (bans, channels, words, NSFW, cooldown, sizes): raise before queuing.
    rules = await check_request(services, interaction, request)
    # 2. Queue it. QueueFull propagates as a short ephemeral refusal.
    owner = JobOwner(user_id=interaction.user.id, guild_id=interaction.guild_id,
                     channel_id=interaction.channel_id)
    job_id = await services.scheduler.submit(
        request, owner, parent_job_id=parent_job_id, parent_index=parent_index,
        priority=rules.priority, max_queued_per_user=rules.max_queued_per_user, private=rules.private,
    )
    # 3. Answer at once with the queue position; this message becomes the job's message.
    try:
        # None when it already started: the worker's events say more soon.
        shown = presenter.queued(request, interaction.user.id, services.scheduler.entry(job_id))
        created = interaction.created_at.timestamp()
        if interaction.response.is_done():
            # A second job from one click (/describe's "Imagine all"): a followup, edited through the same
            # token as the first.
            sent = await interaction.followup.send(shown.content, ephemeral=rules.private, wait=True)
            message_id: int | None = sent.id
        else:
            response = await interaction.response.send_message(shown.content, ephemeral=rules.private)
            message_id = getattr(response, "message_id", None)
        if message_id is None:
            message_id = (await interaction.original_response()).id
        # 4. Remember where the message lives: updates go through the interaction token while it lives,
        # then through the channel.
        await services.db.jobs.set_message_refs(
            job_id, interaction_token=interaction.token,
            token_expires_at=created + TOKEN_LIFETIME_S - TOKEN_MARGIN_S,
            message_id=message_id, channel_id=interaction.channel_id,
        )
    except discord.HTTPException:
        # The job is queued and stays queued: its result will be posted to the channel instead.
        log.warning("could not announce job %s (interaction %s)", job_id, interaction.id, exc_info=True)
    finally:
        bot.delivery.refs_recorded(job_id)
    log.info("job %s queued by user %s in guild %s", job_id, interaction.user.id, interaction.guild_id)
    return job_id


async def imagine_prompt(interaction: AtelierInteraction, draft: RequestDraft) -> int:
    """A text-to-image job from a draft as /imagine makes it (the member's defaults, a 2x2 grid unless they
    chose a count); returns the job id."""
    draft = await personal_draft(interaction, draft)
    if draft.count is None and draft.kind == Kind.TXT2IMG:
        # Like Midjourney: a 2x2 grid unless the member (options, flags, /settings) chose otherwise.
        draft = dataclasses.replace(draft, count=DEFAULT_GRID)
    return await start_job(interaction, build_request(draft, interaction.client.services.registry))


def token_alive(expires_at: float | None) -> bool:
    return expires_at is not None and time.time() < expires_at
