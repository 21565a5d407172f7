"""What a member may ask for, here and now: the per-guild rules applied to every new job, whether it
comes from /imagine, a button, a modal or the context menu (all go through `jobflow.start_job`).
Moderators set the rules with /admin; they are the guild's settings (bot/settings_keys.py)."""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

import discord

from bot.defaults import member_settings
from bot.settings_keys import GUILD, GuildSettings
from generation.errors import LimitReached, NotAllowed, PromptRejected
from generation.moderation import WordFilter
from generation.request import RenderRequest

if TYPE_CHECKING:
    from bot.services import Services

log = logging.getLogger(__name__)

# Prompt words that make a request NSFW when the model has no safety checker (and before rendering when
# it has one). Only the prompt is read: "nsfw, nude" in a negative prompt asks for the opposite.
NSFW_TERMS = (
    "nsfw", "nude", "nudes", "nudity", "naked", "porn", "porno", "pornographic", "sex", "sexy", "explicit",
    "topless", "bottomless", "hentai", "xxx", "lewd", "erotic", "erotica", "genitals", "nipples",
    "lingerie", "fetish", "bdsm", "boobs", "breasts", "penis", "vagina", "orgasm", "r18", "r 18",
    "undress", "undressed", "undressing",  # the matcher reads plurals, not verb endings
)
_NSFW_FILTER = WordFilter(NSFW_TERMS)

# A member whose prompts are refused this often within the window waits out a cooldown before the next
# request. Counted from the audit log's "prompt.rejected" entries, so a restart forgets nothing.
REFUSALS_BEFORE_COOLDOWN = 5
REFUSAL_WINDOW_S = 10 * 60
REFUSAL_COOLDOWN_S = 5 * 60

@dataclass(frozen=True)
class Rules:
    """The outcome of the checks: how the job is to be queued."""

    priority: float = 1.0
    max_queued_per_user: int | None = None
    private: bool = False


async def guild_config(services: Services, guild_id: int) -> GuildSettings:
    return await GUILD.get(services.db, guild_id)


def is_nsfw_prompt(prompt: str) -> bool:
    return _NSFW_FILTER.find(prompt) is not None


def channel_is_age_restricted(interaction: discord.Interaction[Any]) -> bool:
    channel = interaction.channel
    is_nsfw = getattr(channel, "is_nsfw", None)
    return bool(is_nsfw()) if callable(is_nsfw) else False


def role_ids(interaction: discord.Interaction[Any]) -> list[int]:
    roles = getattr(interaction.user, "roles", None) or []
    return [role.id for role in roles]


async def reject_prompt(services: Services, interaction: discord.Interaction[Any], request: RenderRequest,
                        reason: str, message: str) -> PromptRejected:
    """Audit a rejected prompt (who, what, where) and return the error to raise."""
    await services.db.audit.record(
        interaction.guild_id, interaction.user.id, "prompt.rejected", f"user:{interaction.user.id}",
        {"prompt": request.prompt[:500], "reason": reason, "channel": interaction.channel_id},
    )
    log.info("rejected prompt of user %s in guild %s: %s", interaction.user.id, interaction.guild_id, reason)
    count, _ = await services.db.audit.count_recent(interaction.guild_id, interaction.user.id,
                                                    "prompt.rejected", time.time() - REFUSAL_WINDOW_S)
    if count >= REFUSALS_BEFORE_COOLDOWN:  # this refusal starts (or restarts) a cooldown
        await services.db.audit.record(
            interaction.guild_id, interaction.user.id, "prompt.cooldown", f"user:{interaction.user.id}",
            {"refusals": count, "window_s": REFUSAL_WINDOW_S, "cooldown_s": REFUSAL_COOLDOWN_S})
        message += (f" That is {count} refusals in {REFUSAL_WINDOW_S // 60} minutes: please wait "
                    f"{REFUSAL_COOLDOWN_S // 60} minutes before your next request.")
    return PromptRejected(message)


async def refusal_cooldown(services: Services, guild_id: int | None, user_id: int) -> float:
    """Seconds left of the cooldown that repeated refusals earned (0 when none)."""
    count, newest = await services.db.audit.count_recent(guild_id, user_id, "prompt.rejected",
                                                         time.time() - REFUSAL_WINDOW_S)
    if count < REFUSALS_BEFORE_COOLDOWN or newest is None:
        return 0.0
    return max(0.0, newest + REFUSAL_COOLDOWN_S - time.time())


async def check_request(services: Services, interaction: discord.Interaction[Any],  # noqa: C901 -- kernel branch rewrites bot/
                        request: RenderRequest) -> Rules:
    """Raise a domain error (NotAllowed, PromptRejected, LimitReached) if the request may not run;
    otherwise say how to queue it."""
    user_id = interaction.user.id
    private = (await member_settings(interaction)).private
    guild_id = interaction.guild_id
    if guild_id is None:
        await check_dm_request(services, interaction, request)
        return Rules(max_queued_per_user=services.settings.queue_max_per_user, private=private)
    config = await guild_config(services, guild_id)

    # 1. Who and where.
    ban = await services.db.moderation.get_ban(guild_id, user_id)
    if ban is not None:
        why = f" Reason: {ban.reason}" if ban.reason else ""
        raise NotAllowed(f"You are banned from making images here.{why}")
    if not config.channel_allowed(interaction.channel_id):
        allowed = " ".join(f"<#{c}>" for c in config.allowed_channels[:10])
        hint = f" Try {allowed}." if allowed and interaction.channel_id not in config.denied_channels else ""
        raise NotAllowed(f"Atelier is not available in this channel.{hint}")
    wait = await refusal_cooldown(services, guild_id, user_id)
    if wait > 0:
        raise LimitReached(f"Too many of your prompts were refused just now: try again in "
                           f"{max(1, round(wait / 60))} min.")

    # 2. What: banned words, then the NSFW policy (prompt level; images are checked after rendering).
    words = WordFilter.cached(await services.db.moderation.banned_words(guild_id))
    hit = words.find(request.prompt)
    if hit is not None:
        raise await reject_prompt(services, interaction, request, f"banned word: {hit}",
                                  "Your prompt contains a word this server does not allow.")
    if is_nsfw_prompt(request.prompt):
        if config.nsfw == "block":
            raise await reject_prompt(services, interaction, request, "nsfw: blocked",
                                      "NSFW prompts are not allowed on this server.")
        if config.nsfw == "age_restricted" and not channel_is_age_restricted(interaction):
            raise await reject_prompt(services, interaction, request, "nsfw: not an age-restricted channel",
                                      "NSFW prompts are only allowed in age-restricted channels.")

    # 3. How much.
    if config.max_steps is not None and request.steps > config.max_steps:
        raise LimitReached(f"This server allows at most {config.max_steps} steps.")
    if config.max_size is not None and max(request.width, request.height) > config.max_size:
        raise LimitReached(
            f"This server allows images up to {config.max_size} px on a side "
            f"({request.width}×{request.height} asked).")
    if config.max_count is not None and request.count > config.max_count:
        raise LimitReached(f"This server allows at most {config.max_count} images per job.")
    if config.cooldown_s > 0:
        last = await services.db.jobs.list_for_user(user_id, guild_id=guild_id, limit=1)
        if last:
            wait = last[0].created_at + config.cooldown_s - time.time()
            if wait > 0:
                raise LimitReached(f"Slow down: you can start another job in {wait:.0f} s.")

    # 4. How it queues.
    priorities = [config.role_priority[r] for r in role_ids(interaction) if r in config.role_priority]
    # A guild may lower the operator's cap, never raise it (a value saved before /admin limits refused
    # larger ones still obeys it).
    cap = services.settings.queue_max_per_user
    return Rules(
        priority=max(priorities) if priorities else 1.0,
        max_queued_per_user=min(config.max_queued or cap, cap),
        private=private,
    )


async def check_dm_request(services: Services, interaction: discord.Interaction[Any],
                           request: RenderRequest) -> None:
    """The operator's rules for a job asked for in a DM, where no moderators set any: DMs must be
    enabled (ATELIER_ALLOW_DMS), a member banned in any server the bot is in is banned here too (a DM
    must not be the way around a ban), and NSFW prompts are refused (NSFW_TERMS is the word list: there
    is no age-restricted channel in a DM). Flagged images are hidden at delivery (nsfw_presentation)."""
    if not services.settings.allow_dms:
        raise NotAllowed("Atelier works inside servers only.")
    user_id = interaction.user.id
    for guild in getattr(interaction.client, "guilds", []):
        if await services.db.moderation.get_ban(guild.id, user_id) is not None:
            raise NotAllowed("You are banned from making images with this bot.")
    if is_nsfw_prompt(request.prompt):
        raise await reject_prompt(services, interaction, request, "nsfw: direct message",
                                  "NSFW prompts are not allowed in direct messages.")


async def channel_open(services: Services, interaction: discord.Interaction[Any]) -> bool:
    """Whether the bot may post publicly in this channel: not one the moderators denied (or left out of
    the allowed list). DMs are open: only their owner is there."""
    if interaction.guild_id is None:
        return True
    return (await guild_config(services, interaction.guild_id)).channel_allowed(interaction.channel_id)


async def nsfw_presentation(services: Services, guild_id: int | None, channel_age_restricted: bool,
                            request: RenderRequest, flagged: bool) -> Literal["show", "spoiler", "block"]:
    """How a finished image is shown under the guild's NSFW policy. `flagged` is the safety checker's
    verdict for the image (False when the model has none: then the prompt decides). In a DM the
    operator's rule applies: NSFW is blocked."""
    return await nsfw_image_presentation(services, guild_id, channel_age_restricted,
                                         flagged or is_nsfw_prompt(request.prompt))


async def nsfw_image_presentation(services: Services, guild_id: int | None, channel_age_restricted: bool,
                                  nsfw: bool) -> Literal["show", "spoiler", "block"]:
    """How an image judged `nsfw` (a render, or a member's upload shown back by /describe) is shown."""
    if not nsfw:
        return "show"
    if guild_id is None:
        return "block"
    mode = (await guild_config(services, guild_id)).nsfw
    if mode == "allow":
        return "show"
    if mode == "spoiler":
        return "spoiler"
    if mode == "age_restricted" and channel_age_restricted:
        return "show"
    return "block"
