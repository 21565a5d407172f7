"""The one error handler: domain errors become short ephemeral messages; anything else is logged with
the interaction (and job) ids and the user gets a short apology. Nothing here re-raises: a failure in
one interaction never stops the bot."""

from __future__ import annotations

import logging
from typing import Any

import discord
from discord import app_commands

from bot.reply import reply
from generation.errors import AtelierError

log = logging.getLogger(__name__)


def unwrap(error: BaseException) -> BaseException:
    while isinstance(error, app_commands.CommandInvokeError | app_commands.TransformerError):
        if error.__cause__ is None:
            break
        error = error.__cause__
    return error


async def report_error(interaction: discord.Interaction, error: BaseException, *,
                       job_id: int | None = None) -> None:
    error = unwrap(error)
    if isinstance(error, AtelierError):
        message = error.user_message
    elif isinstance(error, app_commands.MissingPermissions):
        message = "You need the Manage Server permission for that."
    elif isinstance(error, app_commands.NoPrivateMessage):
        message = "That only works inside a server."
    elif isinstance(error, app_commands.CommandOnCooldown):
        message = f"Slow down: try again in {error.retry_after:.0f} s."
    elif isinstance(error, app_commands.CheckFailure):
        message = "You can't use that here."
    else:
        command = interaction.command.qualified_name if interaction.command else None
        data: dict[str, Any] = dict(interaction.data or {})
        log.error(
            "unhandled error in interaction %s (command=%s, custom_id=%s, job=%s, user=%s)",
            interaction.id, command, data.get("custom_id"), job_id,
            interaction.user.id, exc_info=error,
        )
        message = f"Sorry, something went wrong on our side (ref {interaction.id})."
    try:
        await reply(interaction, message, ephemeral=True)
    except Exception:  # the user is gone or Discord is down: the log line above is what remains
        log.warning("could not report error to interaction %s", interaction.id, exc_info=True)
