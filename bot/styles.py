"""Server styles as prompts see them: `--style name` expanded from the guild's styles (storage/styles.py)
before a request is validated, and the autocomplete of style names."""

from __future__ import annotations

import dataclasses

from discord import app_commands

from bot.interaction import AtelierInteraction
from generation.errors import InvalidRequest
from generation.styles import StyleParts, apply_style, style_in
from generation.validate import RequestDraft


async def expand_style(interaction: AtelierInteraction, draft: RequestDraft) -> RequestDraft:
    """The draft with its `--style name` replaced by the style's suffix and LoRA; unchanged without one."""
    prompt, name = style_in(draft.prompt)
    if name is None:
        return draft
    if interaction.guild_id is None:
        raise InvalidRequest("Styles belong to a server: `--style` works in a server's channels.")
    style = await interaction.client.services.db.styles.get(interaction.guild_id, name)
    if style is None:
        raise InvalidRequest(f"This server has no style `{name[:32]}`; `/style list` shows them.")
    parts = StyleParts(name=style.name, suffix=style.suffix, lora=style.lora, lora_weight=style.lora_weight)
    return dataclasses.replace(draft, prompt=apply_style(prompt, parts))


async def style_choices(interaction: AtelierInteraction, current: str) -> list[app_commands.Choice[str]]:
    if interaction.guild_id is None:
        return []
    styles = await interaction.client.services.db.styles.list(interaction.guild_id,
                                                              prefix=current.strip().lower(), limit=25)
    return [app_commands.Choice(name=s.name, value=s.name) for s in styles]
