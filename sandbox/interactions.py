"""Interactions the sandbox sends as users, and the record of how the bot answered them."""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field
from typing import Any

from sandbox.world import Channel, Message, User

# Interaction types.
PING = 1
APPLICATION_COMMAND = 2
MESSAGE_COMPONENT = 3
AUTOCOMPLETE = 4
MODAL_SUBMIT = 5

# Callback (response) types.
CHANNEL_MESSAGE = 4
DEFERRED_CHANNEL_MESSAGE = 5
DEFERRED_UPDATE_MESSAGE = 6
UPDATE_MESSAGE = 7
AUTOCOMPLETE_RESULT = 8
MODAL = 9

ATTACHMENT_SIZE_LIMIT = 25 * 1024 * 1024


@dataclass
class RecordedCall:
    method: str
    path: str
    status: int
    json: Any
    files: list[tuple[str, bytes]]
    at: float
    query: dict[str, str] = field(default_factory=dict)


@dataclass(eq=False)
class Interaction:
    id: int
    token: str
    type: int
    user: User
    channel: Channel
    payload: dict[str, Any]
    # The message a component interaction came from (buttons, selects, modals opened from one).
    message: Message | None = None
    sent_at: float = 0.0
    acked_at: float | None = None
    response_type: int | None = None
    original: Message | None = None
    followups: list[Message] = field(default_factory=list)
    modal: dict[str, Any] | None = None
    choices: list[dict[str, Any]] | None = None
    callback_attempts: int = 0
    _acked: asyncio.Event = field(default_factory=asyncio.Event, repr=False)

    @property
    def ack_latency(self) -> float | None:
        """Seconds from INTERACTION_CREATE being sent to the callback being received."""
        if self.acked_at is None:
            return None
        return self.acked_at - self.sent_at

    @property
    def ephemeral_messages(self) -> list[Message]:
        msgs = ([self.original] if self.original else []) + self.followups
        seen: set[int] = set()
        out = []
        for m in msgs:
            if m.ephemeral and not m.deleted and m.id not in seen:
                seen.add(m.id)
                out.append(m)
        return out

    def mark_acked(self, response_type: int, at: float | None = None) -> None:
        self.acked_at = time.monotonic() if at is None else at
        self.response_type = response_type
        self._acked.set()

    async def wait_ack(self, timeout: float = 10) -> int:  # noqa: ASYNC109 (the lead's API)
        """Wait for the bot's callback; returns its type (4-9)."""
        await asyncio.wait_for(self._acked.wait(), timeout)
        assert self.response_type is not None
        return self.response_type
