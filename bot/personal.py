"""`--p [vN]` in a prompt: the member's personal style (generation/personalize.py), learnt from the jobs
whose images they starred since their last reset. The newest version is brought up to date on use (a new
version only when the stars changed what it is); `--p v2` takes version 2 as it was.

A version also keeps the images starred most recently (MAX_STYLE_IMAGES). On a model with an IP-Adapter,
`--p` in /imagine's prompt names them as `--sref` images, so the existing reference path fetches and checks
them and the adapter averages their embeddings: the mean image embedding of the stars. Elsewhere (no
adapter, or paths that take no references) the style is its phrases and LoRA."""

from __future__ import annotations

import dataclasses

from bot.interaction import AtelierInteraction
from generation.errors import InvalidRequest
from generation.personalize import MIN_LIKED, Liked, p_flag_in, profile_of
from generation.references import MAX_IMAGES_PER_ROLE, STYLE
from generation.styles import StyleParts, apply_style
from generation.validate import RequestDraft, parse_flags
from storage.personal import PersonalStyle

NO_STYLE_YET = (f"`--p` learns from the images you star: star images from at least {MIN_LIKED} of your "
                "jobs (⭐ under a result) first.")
# As many as one `--sref` takes: the style reference is one role's average.
MAX_STYLE_IMAGES = MAX_IMAGES_PER_ROLE


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
    images = tuple(await store.liked_images(user_id, since=await store.reset_at(user_id),
                                            limit=MAX_STYLE_IMAGES))
    latest = await store.latest(user_id)
    if latest is not None and (latest.suffix, latest.lora, latest.lora_weight, latest.images) == (
            profile.suffix, profile.lora, profile.lora_weight, images):
        return latest
    return await store.add(user_id, profile.suffix, profile.lora, profile.lora_weight, len(liked), images)


async def expand_personal(interaction: AtelierInteraction, draft: RequestDraft,
                          with_images: bool = False) -> RequestDraft:
    """The draft with `--p [vN]` replaced by that personal style's suffix and LoRA (and, `with_images` on a
    model with an IP-Adapter, its images as `--sref`: only for callers that plan references next);
    unchanged without it."""
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
    prompt = apply_style(prompt, parts)
    if with_images and style.images and await _has_adapter(interaction, prompt, draft.model):
        prompt = f"{prompt} {' '.join(f'--sref {name}' for name in style.images)}"
    return dataclasses.replace(draft, prompt=prompt)


async def _has_adapter(interaction: AtelierInteraction, prompt: str, model: str | None) -> bool:
    """Whether the stars should join as this prompt's style reference: it names none of its own, and the
    model it will render on has an IP-Adapter (its `--model`, else the command's option, else the member's
    default as apply_personal_defaults picks it, else the server's first)."""
    from bot.defaults import member_settings  # bot.defaults imports this module

    registry = interaction.client.services.registry
    try:
        flags = parse_flags(prompt)[1]
    except InvalidRequest:
        return False  # build_request reports the bad flag
    if any(role == STYLE for role, _ in flags.get("references", [])):
        return False
    flagged = flags.get("model")
    default = (await member_settings(interaction)).defaults().get("model")
    name = flagged or model or (default if default in registry.names() else None)
    try:
        return registry.spec(name).ip_adapter is not None
    except InvalidRequest:
        return False

def describe_style(style: PersonalStyle) -> str:
    lora = f", LoRA `{style.lora}` at {style.lora_weight:g}" if style.lora else ""
    images = f", and your {len(style.images)} latest starred images" if style.images else ""
    return f"v{style.version} (from {style.liked_jobs} starred jobs): “{style.suffix}”{lora}{images}"
