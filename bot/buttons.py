"""Persistent buttons: custom_id `atelier:<action>:<job_id>[:<index>]`, parsed by a DynamicItem, so a
button works after a restart and for jobs of any age. The button holds no state: each click reads the
job from the database. Extensions register what each action does with `register_action`."""

from __future__ import annotations

import logging
import re
from collections.abc import Awaitable, Callable
from typing import Any

import discord

log = logging.getLogger(__name__)

Handler = Callable[[discord.Interaction[Any], int, int | None], Awaitable[None]]
_ACTIONS: dict[str, Handler] = {}


def register_action(action: str, handler: Handler) -> None:
    _ACTIONS[action] = handler


def custom_id(action: str, job_id: int, index: int | None = None) -> str:
    cid = f"atelier:{action}:{job_id}" if index is None else f"atelier:{action}:{job_id}:{index}"
    assert len(cid) <= 100, cid  # Discord's limit; our ids are far below it
    return cid


class JobButton(
    discord.ui.DynamicItem[discord.ui.Button[Any]],
    template=r"atelier:(?P<action>[a-z]+):(?P<job_id>[0-9]{1,19})(?::(?P<index>[0-9]{1,3}))?",
):
    def __init__(self, action: str, job_id: int, index: int | None = None, *, label: str | None = None,
                 emoji: str | discord.PartialEmoji | None = None,
                 style: discord.ButtonStyle = discord.ButtonStyle.secondary, row: int | None = None,
                 disabled: bool = False) -> None:
        super().__init__(
            discord.ui.Button(label=label, emoji=emoji, style=style, row=row, disabled=disabled,
                              custom_id=custom_id(action, job_id, index))
        )
        self.action = action
        self.job_id = job_id
        self.index = index

    @classmethod
    async def from_custom_id(cls, interaction: discord.Interaction[Any], item: discord.ui.Item[Any],
                             match: re.Match[str], /) -> JobButton:
        assert isinstance(item, discord.ui.Button)
        index = match["index"]
        return cls(match["action"], int(match["job_id"]), None if index is None else int(index),
                   label=item.label, emoji=item.emoji, style=item.style, row=item.row)

    async def callback(self, interaction: discord.Interaction[Any]) -> None:
        from bot.errors import report_error

        handler = _ACTIONS.get(self.action)
        try:
            if handler is None:
                from generation.errors import NotFound

                raise NotFound("That button is no longer supported.")
            await handler(interaction, self.job_id, self.index)
        except Exception as exc:
            await report_error(interaction, exc, job_id=self.job_id)
