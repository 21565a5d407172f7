"""Starting a job from any entry point (slash command, button, modal, context menu): the moderation
checks, submission to the scheduler, the immediate public "queued" reply, and recording where the job's
message lives so its updates and result can find it later (even after a restart)."""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from typing import TYPE_CHECKING

import discord

from bot import presenter
from bot.policy import Rules, check_request
from generation.errors import QueueFull
from generation.request import RenderRequest
from generation.scheduler import JobOwner

if TYPE_CHECKING:
    from bot.interaction import AtelierInteraction

log = logging.getLogger(__name__)

# Discord interaction tokens live 15 minutes; a little margin keeps us from racing the expiry.
TOKEN_LIFETIME_S = 15 * 60
TOKEN_MARGIN_S = 30


async def start_job(interaction: AtelierInteraction, request: RenderRequest, *,
                    parent_job_id: int | None = None, parent_index: int | None = None) -> int:
    """Check, queue and announce a job; returns its id. Domain errors propagate to the error handler
    before anything is queued."""
    rules = await check_jobs(interaction, [request])
    ids = await queue_checked(interaction, [request], rules, parent_job_id=parent_job_id,
                              parent_index=parent_index)
    return ids[0]


async def start_jobs(interaction: AtelierInteraction, requests: Sequence[RenderRequest]) -> list[int]:
    """Several jobs from one command (a prompt's permutations and repeats): every one is checked before
    any is queued, then each gets its own message."""
    rules = await check_jobs(interaction, requests)
    return await queue_checked(interaction, requests, rules)


async def check_jobs(interaction: AtelierInteraction, requests: Sequence[RenderRequest]) -> Rules:
    """Moderation and limits (bans, channels, words, NSFW, cooldown, sizes) for every request, and room
    for all of them under the member's queue cap; raises before anything is queued. Every request is
    checked before the first is queued, so the cooldown (which counts from the member's last job) holds
    the batch as one command rather than refusing its second job."""
    services = interaction.client.services
    rules = Rules()
    for request in requests:
        rules = await check_request(services, interaction, request)
    if len(requests) > 1:
        cap = rules.max_queued_per_user or services.settings.queue_max_per_user
        active = await services.db.jobs.list_active(user_id=interaction.user.id)
        waiting = sum(1 for job in active if job.status == "queued")
        if waiting + len(requests) > cap:
            already = f" and {waiting} of yours are waiting already" if waiting else ""
            raise QueueFull(f"That prompt makes {len(requests)} jobs; you may have {cap} waiting{already}. "
                            "Nothing was queued: use fewer options or a smaller --repeat.")
    return rules


async def queue_checked(interaction: AtelierInteraction, requests: Sequence[RenderRequest], rules: Rules, *,
                        parent_job_id: int | None = None, parent_index: int | None = None) -> list[int]:
    """Queue requests that passed `check_jobs` and announce each in a message of its own."""
    bot = interaction.client
    services = bot.services
    owner = JobOwner(user_id=interaction.user.id, guild_id=interaction.guild_id,
                     channel_id=interaction.channel_id)
    ids = []
    for request in requests:
        # QueueFull propagates as a short ephemeral refusal.
        job_id = await services.scheduler.submit(
            request, owner, parent_job_id=parent_job_id, parent_index=parent_index,
            priority=rules.priority, max_queued_per_user=rules.max_queued_per_user, private=rules.private,
        )
        ids.append(job_id)
        await _announce(interaction, request, job_id, rules.private)
        log.info("job %s queued by user %s in guild %s", job_id, interaction.user.id, interaction.guild_id)
    return ids


async def _announce(interaction: AtelierInteraction, request: RenderRequest, job_id: int,
                    private: bool) -> None:
    """Answer with the queue position; this message becomes the job's message. The first job of an
    interaction answers it, any further one is a followup (edited later through the same token)."""
    bot = interaction.client
    services = bot.services
    try:
        # None when it already started: the worker's events say more soon.
        shown = presenter.queued(request, interaction.user.id, services.scheduler.entry(job_id))
        created = interaction.created_at.timestamp()
        message_id: int | None
        if interaction.response.is_done():
            message_id = (await interaction.followup.send(shown.content, ephemeral=private, wait=True)).id
        else:
            response = await interaction.response.send_message(shown.content, ephemeral=private)
            message_id = getattr(response, "message_id", None)
            if message_id is None:
                message_id = (await interaction.original_response()).id
        # Remember where the message lives: updates go through the interaction token while it lives,
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


def token_alive(expires_at: float | None) -> bool:
    return expires_at is not None and time.time() < expires_at
