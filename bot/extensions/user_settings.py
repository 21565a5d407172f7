"""/settings: a member's personal defaults for /imagine (model, aspect, steps, guidance, negative prompt,
count) and private mode (results ephemeral and kept out of others' galleries). Explicit options and
inline flags always win over these defaults."""

from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING, Any, Literal

import discord
from discord import app_commands
from discord.ext import commands

from bot.jobflow import bot_of
from bot.reply import reply
from generation.errors import AtelierError, InvalidRequest
from generation.request import Kind
from generation.validate import ASPECTS, RequestDraft, build_request, parse_flags

if TYPE_CHECKING:
    from generation.models import ModelCatalog

DEFAULT_KEYS = ("model", "aspect", "steps", "guidance", "negative", "count")
KEYS = (*DEFAULT_KEYS, "private")
ResetChoice = Literal["all", "model", "aspect", "steps", "guidance", "negative", "count", "private"]


def apply_personal_defaults(draft: RequestDraft, defaults: dict[str, Any],
                            registry: ModelCatalog) -> RequestDraft:
    """Fill the options the member left out with their defaults. Inline flags need no care here (they
    beat options in build_request) except `--no`, which is added to the negative option: a default
    negative prompt must not be added to a `--no` the member typed."""
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


async def personal_draft(interaction: discord.Interaction[Any], draft: RequestDraft) -> RequestDraft:
    """The draft with the interacting member's defaults applied (the one call /imagine makes)."""
    services = bot_of(interaction).services
    defaults = await services.db.users.get(interaction.user.id)
    return apply_personal_defaults(draft, defaults, services.registry)


def describe(settings: dict[str, Any]) -> str:
    lines = ["**Your defaults for /imagine** (options and flags you type always win):"]
    for key in DEFAULT_KEYS:
        value = settings.get(key)
        lines.append(f"• {key}: {'`' + str(value) + '`' if value is not None else '—'}")
    private = bool(settings.get("private", False))
    state = "on (results only you see, kept out of galleries)" if private else "off"
    lines.append(f"• private mode: {state}")
    return "\n".join(lines)


class UserSettings(commands.Cog):
    def __init__(self, bot: commands.Bot) -> None:
        self.bot = bot

    @app_commands.command(name="settings", description="Show or set your defaults for /imagine")
    @app_commands.describe(
        model="Default model", aspect="Default aspect ratio", steps="Default sampling steps",
        guidance="Default guidance scale", negative="Default negative prompt", count="Default image count",
        private="Private mode: results only you see, kept out of other members' galleries",
        reset="Clear one default, or all of them",
    )
    @app_commands.choices(aspect=[app_commands.Choice(name=a, value=a) for a in ASPECTS])
    async def settings(self, interaction: discord.Interaction[Any], model: str | None = None,
                       aspect: str | None = None, steps: app_commands.Range[int, 1, 150] | None = None,
                       guidance: app_commands.Range[float, 0.0, 30.0] | None = None,
                       negative: app_commands.Range[str, 1, 1000] | None = None,
                       count: app_commands.Range[int, 1, 4] | None = None, private: bool | None = None,
                       reset: ResetChoice | None = None) -> None:
        services = bot_of(interaction).services
        users = services.db.users
        user_id = interaction.user.id
        if reset == "all":
            await users.reset(user_id)
        elif reset is not None:
            await users.reset(user_id, [reset])
        given = {"model": model, "aspect": aspect, "steps": steps, "guidance": guidance,
                 "negative": negative, "count": count}
        changes = {k: v for k, v in given.items() if v is not None}
        if changes:
            # Validate the new defaults together with the kept ones, exactly as /imagine would use them.
            current = await users.get(user_id)
            merged: dict[str, Any] = {**{k: current.get(k) for k in DEFAULT_KEYS}, **changes}
            try:
                build_request(RequestDraft(prompt="settings check", **merged), services.registry)
            except AtelierError as exc:
                raise InvalidRequest(f"Not saved: {exc.user_message}") from None
            if "model" in changes:
                changes["model"] = services.registry.spec(model).name
        if private is not None:
            changes["private"] = private
        current = await users.update(user_id, changes) if changes else await users.get(user_id)
        prefix = "Saved. " if changes or reset else ""
        await reply(interaction, prefix + describe(current), ephemeral=True)

    @settings.autocomplete("model")
    async def model_autocomplete(self, interaction: discord.Interaction[Any],
                                 current: str) -> list[app_commands.Choice[str]]:
        names = bot_of(interaction).services.registry.names()
        return [app_commands.Choice(name=n, value=n) for n in names if current.lower() in n.lower()][:25]


async def setup(bot: commands.Bot) -> None:
    await bot.add_cog(UserSettings(bot))
