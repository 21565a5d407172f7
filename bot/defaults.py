"""A member's defaults for new jobs (/settings): read once per interaction, applied to every draft that
starts a job (/imagine, `/imagine image:`, the "Imagine from this image" menu) and to the private-mode
rule in bot/policy.py."""

from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING, Any

from discord import app_commands

from bot.personal import expand_personal
from bot.settings_keys import MEMBER, MemberSettings
from bot.styles import expand_style
from generation.errors import InvalidRequest
from generation.preferences import apply_preferences
from generation.request import Kind
from generation.validate import RequestDraft, parse_flags

if TYPE_CHECKING:
    from bot.interaction import AtelierInteraction
    from generation.models import ModelCatalog

_CACHE_KEY = "atelier.member_settings"


async def member_settings(interaction: AtelierInteraction) -> MemberSettings:
    """The member's saved settings, read from storage once per interaction (the draft and the policy
    checks of one click see the same values)."""
    cached = interaction.extras.get(_CACHE_KEY)
    if not isinstance(cached, MemberSettings):
        cached = interaction.extras[_CACHE_KEY] = await MEMBER.get(interaction.client.services.db,
                                                                   interaction.user.id)
    return cached


def apply_personal_defaults(draft: RequestDraft, member: MemberSettings,
                            registry: ModelCatalog) -> RequestDraft:
    """Fill the options the member left out with their defaults. Inline flags need no care here (they
    beat options in build_request) except `--no`, which is added to the negative option: a default
    negative prompt must not be added to a `--no` the member typed."""
    defaults = member.defaults()
    values: dict[str, Any] = {}
    # A default aspect would distort a starting image: img2img keeps the source's shape.
    keys = ("aspect", "steps", "guidance", "count") if draft.kind == Kind.TXT2IMG else ("steps", "guidance")
    for key in keys:
        if getattr(draft, key) is None and defaults.get(key) is not None:
            values[key] = defaults[key]
    model = defaults.get("model")
    # A model the owner has since removed must not break every /imagine of this member.
    if draft.model is None and model and model in registry.names():
        values["model"] = model
    if draft.negative is None and defaults.get("negative"):
        try:
            _, flags = parse_flags(draft.prompt)
        except InvalidRequest:
            flags = {}  # build_request reports the bad flag
        if "negative" not in flags:
            values["negative"] = defaults["negative"]
    return dataclasses.replace(draft, **values) if values else draft


async def personal_draft(interaction: AtelierInteraction, draft: RequestDraft) -> RequestDraft:
    """The draft with the interacting member's defaults applied (the one call /imagine makes)."""
    # The server style and the personal style (--p) first (paths that skip personal_prompt): their
    # suffixes and LoRAs become part of the prompt the defaults then read.
    draft = await expand_personal(interaction, await expand_style(interaction, draft))
    return apply_personal_defaults(draft, await member_settings(interaction),
                                   interaction.client.services.registry)


async def personal_prompt(interaction: AtelierInteraction, prompt: str, model: str | None = None,
                          references: bool = False) -> str:
    """The prompt with the member's /prefer options expanded and suffix added (before permutations).
    With `references` (a caller that plans the prompt's references next, bot/references.py), `--p` on a
    model with an IP-Adapter (`model` is the command's option) adds its starred images as `--sref`."""
    member = await member_settings(interaction)
    prompt = apply_preferences(prompt, member.options, member.suffix)
    # Then the server style and the personal style (--p, which a /prefer suffix may name), before anything
    # parses the prompt's flags (references, permutations): they add `--lora`, and are no flags themselves.
    draft = await expand_style(interaction, RequestDraft(prompt=prompt, model=model))
    return (await expand_personal(interaction, draft, with_images=references)).prompt


async def model_choices(interaction: AtelierInteraction, current: str) -> list[app_commands.Choice[str]]:
    """The configured models matching what the member typed: autocomplete of `model` in /imagine and
    /settings."""
    names = interaction.client.services.registry.names()
    current = current.lower()
    return [app_commands.Choice(name=n, value=n) for n in names if current in n.lower()][:25]
