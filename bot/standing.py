"""Whether a member may use the bot here at all (not a ban, not a closed channel), for the commands that
make no job themselves but work on members' uploads (/describe, /style save). Jobs get the whole policy
(bot/policy.py check_request)."""

from __future__ import annotations

from bot.interaction import AtelierInteraction
from bot.policy import guild_config
from generation.errors import NotAllowed


async def check_member_here(interaction: AtelierInteraction) -> None:
    """Who and where, before anything is downloaded: a member banned from making images, or a channel the
    moderators closed, is refused here too."""
    guild_id = interaction.guild_id
    if guild_id is None:
        return
    services = interaction.client.services
    if await services.db.moderation.get_ban(guild_id, interaction.user.id) is not None:
        raise NotAllowed("You are banned from making images here.")
    if not (await guild_config(services, guild_id)).channel_allowed(interaction.channel_id):
        raise NotAllowed("Atelier is not available in this channel.")
