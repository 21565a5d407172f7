"""One reply helper that knows whether an interaction is already answered or expired
(Red-DiscordBot's `_send_from_interaction` idea)."""

from __future__ import annotations

import logging
from typing import Any

import discord

log = logging.getLogger(__name__)


async def reply(interaction: discord.Interaction, content: str | None = None, *, ephemeral: bool = True,
                **kwargs: Any) -> None:
    """Answer an interaction: the first answer is the response, later ones are followups.

    An expired or unknown interaction (token older than 15 minutes, or already gone) is logged and
    dropped: there is nobody left to show an ephemeral message to.
    """
    try:
        if not interaction.response.is_done():
            await interaction.response.send_message(content, ephemeral=ephemeral, **kwargs)
        else:
            await interaction.followup.send(content or "", ephemeral=ephemeral, **kwargs)
    except (discord.NotFound, discord.HTTPException) as exc:
        if isinstance(exc, discord.NotFound) or exc.status == 401:
            log.info("interaction %s expired before reply: %s", interaction.id, exc)
            return
        raise
