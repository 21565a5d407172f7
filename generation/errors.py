"""Domain errors. Each carries a short message a Discord user understands.

The bot's one error handler turns any `AtelierError` into an ephemeral reply with `user_message`;
anything else is a bug and is logged with its ids.
"""

from __future__ import annotations


class AtelierError(Exception):
    """Base of every error whose message is meant for the user."""

    def __init__(self, user_message: str) -> None:
        super().__init__(user_message)
        self.user_message = user_message


class ConfigError(AtelierError, ValueError):
    """The operator's configuration is wrong (e.g. a model source's options): the bot does not start."""


class InvalidRequest(AtelierError):
    """Bad options or prompt flags; nothing was queued."""


class PromptRejected(AtelierError):
    """The prompt hit a moderation rule (banned words, NSFW policy)."""


class QueueFull(AtelierError):
    """The per-user or global queue cap is reached."""


class LimitReached(AtelierError):
    """A per-guild limit (cooldown, steps, size, count) stops this request."""


class NotAllowed(AtelierError):
    """The user may not do this here (ban, channel rule, missing permission, not the owner)."""


class NotFound(AtelierError):
    """A job or image the user asked for does not exist (or is not theirs to see)."""


class RenderError(AtelierError):
    """The engine could not render a job (e.g. out of memory even for a single image)."""


class RenderCancelled(Exception):
    """A running render was stopped at a step boundary because it was cancelled."""
