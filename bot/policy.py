"""What a member may ask for, here and now: the per-guild rules applied to every new job, whether it
comes from /imagine or from a button. Moderator settings live in storage; this module reads them."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import discord

from generation.request import RenderRequest

if TYPE_CHECKING:
    from bot.services import Services


@dataclass(frozen=True)
class Rules:
    """The outcome of the checks: how the job is to be queued."""

    priority: float = 1.0
    max_queued_per_user: int | None = None
    private: bool = False


async def check_request(services: Services, interaction: discord.Interaction[Any],
                        request: RenderRequest) -> Rules:
    """Raise a domain error (NotAllowed, PromptRejected, LimitReached) if the request may not run."""
    return Rules(max_queued_per_user=services.settings.queue_max_per_user)
