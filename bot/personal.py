"""`--p [vN]` in a prompt: the member's personal style (generation/personalize.py), learnt from the jobs
whose images they starred since their last reset. The newest version is brought up to date on use (a new
version only when the stars changed what it is); `--p v2` takes version 2 as it was."""

from __future__ import annotations

import dataclasses

from bot.interaction import AtelierInteraction
from generation.errors import InvalidRequest
from generation.personalize import MIN_LIKED, Liked, p_flag_in, profile_of
from generation.styles import StyleParts, apply_style
from generation.validate import RequestDraft
from storage.personal import PersonalStyle

NO_STYLE_YET = (f"`--p` learns from the images you star: star images from at least {MIN_LIKED} of your "
                "jobs (⭐ under a result) first.")


async def current_style(interaction: AtelierInteraction) -> PersonalStyle:
    """The member's newest personal style, made a new version when their stars changed it."""
    store = interaction.client.services.db.personal
    user_id = interaction.user.id
    liked_rows = await store.liked(user_id, since=await store.reset_at(user_id))
    if len(liked_rows) < MIN_LIKED:
        raise InvalidRequest(NO_STYLE_YET)
    # A job stores its prompt with the flags taken out and its LoRAs apart (generation/request.py).
    liked = [Liked(prompt, tuple(loras)) for prompt, loras in liked_rows]
    profile = profile_of(liked)
    if profile.empty:
        raise InvalidRequest("The jobs you starred share no style words or LoRA yet (phrases after the "
                             "subject, like `watercolor, soft light`): star more, or use `--style`.")
    latest = await store.latest(user_id)
    if latest is not None and (latest.suffix, latest.lora, latest.lora_weight) == (
            profile.suffix, profile.lora, profile.lora_weight):
        return latest
    return await store.add(user_id, profile.suffix, profile.lora, profile.lora_weight, len(liked))


async def expand_personal(interaction: AtelierInteraction, draft: RequestDraft) -> RequestDraft:
    """The draft with `--p [vN]` replaced by that personal style's suffix and LoRA; unchanged without it."""
    prompt, asked, version = p_flag_in(draft.prompt)
    if not asked:
        return draft
    if version is None:
        style = await current_style(interaction)
    else:
        found = await interaction.client.services.db.personal.get(interaction.user.id, version)
        if found is None:
            raise InvalidRequest(f"You have no personal style v{version}; `--p` alone takes your newest.")
        style = found
    parts = StyleParts(name=f"p v{style.version}", suffix=style.suffix, lora=style.lora,
                       lora_weight=style.lora_weight)
    return dataclasses.replace(draft, prompt=apply_style(prompt, parts))


def describe_style(style: PersonalStyle) -> str:
    lora = f", LoRA `{style.lora}` at {style.lora_weight:g}" if style.lora else ""
    return f"v{style.version} (from {style.liked_jobs} starred jobs): “{style.suffix}”{lora}"
