"""Interaction tokens never reach the logs, at any level.

An interaction token lets whoever holds it post and edit messages as the bot in that channel for 15
minutes. discord.py writes them at DEBUG: every request URL (`/webhooks/<app>/<token>/...`,
`/interactions/<id>/<token>/callback`) in discord.http and discord.webhook, and every gateway event in
full (INTERACTION_CREATE carries `"token"`) in discord.gateway; and aiosqlite logs every query with its
parameters at DEBUG, the token we store for later edits included. A filter on those loggers rewrites
the message before any handler sees it.
"""

from __future__ import annotations

import logging
import re

REDACTED = "[redacted]"

_PATTERNS = (
    # Webhook and callback URLs: the token is the path segment after the application / interaction id.
    re.compile(r"(/webhooks/\d+/)[^/\s'\"?]+"),
    re.compile(r"(/interactions/\d+/)[^/\s'\"?]+"),
    # Payloads (a dict's repr or JSON): the value of a "token" key.
    re.compile(r"""(['"]token['"]\s*:\s*['"])[^'"]+"""),
    # Anywhere else (query parameters): Discord's interaction tokens are base64 of "interaction:<id>:...".
    re.compile(r"(aW50ZXJhY3Rpb2)[A-Za-z0-9_\-=+/.]+"),
)

# Loggers whose messages can carry an interaction token. A filter on a logger applies only to records
# logged there (not to its children), hence the list.
TOKEN_LOGGERS = (
    "discord.http", "discord.gateway", "discord.webhook.async_", "discord.webhook.sync",
    "discord.interactions", "discord.state", "discord.client", "discord.app_commands.tree", "aiosqlite",
)


def redact(text: str) -> str:
    for pattern in _PATTERNS:
        text = pattern.sub(lambda m: m.group(1) + REDACTED, text)
    return text


class RedactTokens(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        try:
            message = record.getMessage()
        except Exception:  # a malformed record is logging's own problem to report
            return True
        cleaned = redact(message)
        if cleaned != message:
            record.msg, record.args = cleaned, None
        return True


_FILTER = RedactTokens()


def install() -> None:
    """Add the filter to every logger that may carry a token (once; safe to call again)."""
    for name in TOKEN_LOGGERS:
        logger = logging.getLogger(name)
        if _FILTER not in logger.filters:
            logger.addFilter(_FILTER)
