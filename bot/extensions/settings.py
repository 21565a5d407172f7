"""/settings: a member's personal defaults for /imagine (model, aspect, steps, guidance, negative prompt,
count) and private mode (results ephemeral and kept out of others' galleries). Explicit options and
inline flags always win over these defaults."""

from __future__ import annotations

from typing import Any, Literal, get_args

from discord import app_commands
from discord.ext import commands

from bot.defaults import model_choices
from bot.interaction import AtelierInteraction
from bot.reply import reply
from bot.settings_keys import MEMBER, MemberSettings
from generation.errors import AtelierError, InvalidRequest
from generation.validate import ASPECTS, RequestDraft, build_request

ResetChoice = Literal["all", "model", "aspect", "steps", "guidance", "negative", "count", "private"]
# Discord needs the choices spelled out; they must stay the declared keys.
assert set(get_args(ResetChoice)) == {"all", *MEMBER.keys}, get_args(ResetChoice)


def describe(settings: MemberSettings) -> str:
    lines = ["**Your defaults for /imagine** (options and flags you type always win):"]
    for key, value in settings.defaults().items():
        lines.append(f"• {key}: {'`' + str(value) + '`' if value is not None else '—'}")
    state = "on (results only you see, kept out of galleries)" if settings.private else "off"
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
    @app_commands.autocomplete(model=model_choices)
    async def settings(self, interaction: AtelierInteraction, model: str | None = None,
                       aspect: str | None = None, steps: app_commands.Range[int, 1, 150] | None = None,
                       guidance: app_commands.Range[float, 0.0, 30.0] | None = None,
                       negative: app_commands.Range[str, 1, 1000] | None = None,
                       count: app_commands.Range[int, 1, 4] | None = None, private: bool | None = None,
                       reset: ResetChoice | None = None) -> None:
        services = interaction.client.services
        db = services.db
        user_id = interaction.user.id
        if reset == "all":
            await MEMBER.reset(db, user_id)
        elif reset is not None:
            await MEMBER.reset(db, user_id, [reset])
        given = {"model": model, "aspect": aspect, "steps": steps, "guidance": guidance,
                 "negative": negative, "count": count}
        changes = {k: v for k, v in given.items() if v is not None}
        if changes:
            # Validate the new defaults together with the kept ones, exactly as /imagine would use them.
            merged: dict[str, Any] = {**(await MEMBER.get(db, user_id)).defaults(), **changes}
            try:
                build_request(RequestDraft(prompt="settings check", **merged), services.registry)
            except AtelierError as exc:
                raise InvalidRequest(f"Not saved: {exc.user_message}") from None
            if "model" in changes:
                changes["model"] = services.registry.spec(model).name
        if private is not None:
            changes["private"] = private
        current = await MEMBER.set(db, user_id, changes) if changes else await MEMBER.get(db, user_id)
        prefix = "Saved. " if changes or reset else ""
        await reply(interaction, prefix + describe(current), ephemeral=True)


async def setup(bot: commands.Bot) -> None:
    await bot.add_cog(UserSettings(bot))
