"""/admin wildcards: the server's lists behind `__name__` in prompts (generation/wildcards.py draws the
entries). The lists are a guild setting (bot/settings_keys.py); the commands live in /admin, which checks
the moderator and audits each call."""

from __future__ import annotations

from typing import TYPE_CHECKING

import discord

from bot.settings_keys import GUILD
from generation.errors import InvalidRequest
from generation.wildcards import check_list

if TYPE_CHECKING:
    from storage.db import Database

SHOWN_ENTRIES = 8


async def server_wildcards(db: Database, guild_id: int | None) -> dict[str, list[str]]:
    """The lists a prompt made here may use (none in a DM: wildcards belong to a server)."""
    return {} if guild_id is None else (await GUILD.get(db, guild_id)).wildcards


async def set_list(db: Database, guild_id: int, name: str, values: str) -> tuple[str, list[str]]:
    lists = await server_wildcards(db, guild_id)
    name, entries = check_list(name, values, lists)
    await GUILD.set(db, guild_id, {"wildcards": {**lists, name: entries}})
    return name, entries


async def remove_list(db: Database, guild_id: int, name: str) -> str:
    lists = await server_wildcards(db, guild_id)
    name = name.strip().strip("_").lower()
    if name not in lists:
        raise InvalidRequest(f"There is no wildcard `__{discord.utils.escape_markdown(name)[:40]}__`.")
    del lists[name]
    await GUILD.set(db, guild_id, {"wildcards": lists or None})
    return name


def describe_lists(lists: dict[str, list[str]]) -> str:
    if not lists:
        return "No wildcards yet: `/admin wildcards set name:colour values:red, green, blue`."
    lines = [f"{len(lists)} wildcards (write `__name__` in a prompt):"]
    for name, entries in sorted(lists.items()):
        shown = ", ".join(entries[:SHOWN_ENTRIES]) + (", …" if len(entries) > SHOWN_ENTRIES else "")
        lines.append(f"• `__{name}__` ({len(entries)}): {discord.utils.escape_markdown(shown)}")
    return "\n".join(lines)[:1990]
