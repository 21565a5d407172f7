"""The interaction type every command, button and modal of ours receives.

`interaction.client` is our AtelierBot (it is the only client that ever dispatches to our code), so
typing the interaction with it gives `interaction.client.services` and `.delivery` without a cast at
every use. Python 3.11 has no `type` statement, hence a string alias; the bot is imported for the type
checker only, so any module may import this one without an import cycle.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, TypeAlias

import discord

if TYPE_CHECKING:
    from bot.client import AtelierBot

AtelierInteraction: TypeAlias = "discord.Interaction[AtelierBot]"
