"""The LoRA library as members see it: names with their family for autocomplete, and the library as a list
(/admin lora list; the unknown-LoRA message points at it)."""

from __future__ import annotations

from discord import app_commands

from bot.interaction import AtelierInteraction
from generation.families import family_of


def family_label(family: str | None) -> str:
    return "any family" if family is None else family_of(family).label


async def lora_choices(interaction: AtelierInteraction, current: str) -> list[app_commands.Choice[str]]:
    """Library names matching what the member typed, each shown with its kind and family."""
    files = interaction.client.services.registry.loras.files()
    current = current.lower()
    return [app_commands.Choice(name=f"{f.name} ({f.kind}, {family_label(f.family)})", value=f.name)
            for f in files.values() if current in f.name.lower()][:25]


async def library_text(interaction: AtelierInteraction) -> str:
    files = interaction.client.services.registry.loras.files()
    if not files:
        return "The library is empty. Moderators add files with `/admin lora add`."
    lines = [f"• `{f.name}` — {f.kind}, {family_label(f.family)}, hash `{f.short_hash}`"
             for f in sorted(files.values(), key=lambda f: (f.family or "", f.name))]
    return f"{len(files)} in the library:\n" + "\n".join(lines)
