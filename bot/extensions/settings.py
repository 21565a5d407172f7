"""/settings and /prefer: a member's personal defaults for /imagine (model, aspect, steps, guidance,
negative prompt, count), private mode (results ephemeral and kept out of others' galleries), and
Midjourney's /prefer (custom options, a suffix). Explicit options and inline flags always win over these
defaults."""

from __future__ import annotations

from typing import Any, Literal, get_args

from discord import app_commands
from discord.ext import commands

from bot.defaults import model_choices
from bot.interaction import AtelierInteraction
from bot.reply import reply
from bot.settings_keys import MEMBER, MemberSettings
from generation.errors import AtelierError, InvalidRequest
from generation.preferences import check_option, check_text
from generation.validate import ASPECTS, RequestDraft, build_request, expand_prompt

ResetChoice = Literal["all", "model", "aspect", "steps", "guidance", "negative", "count", "private",
                      "options", "suffix"]
# Discord needs the choices spelled out; they must stay the declared keys.
assert set(get_args(ResetChoice)) == {"all", *MEMBER.keys}, get_args(ResetChoice)


def describe(settings: MemberSettings) -> str:
    lines = ["**Your defaults for /imagine** (options and flags you type always win):"]
    for key, value in settings.defaults().items():
        lines.append(f"• {key}: {'`' + str(value) + '`' if value is not None else '—'}")
    state = "on (results only you see, kept out of galleries)" if settings.private else "off"
    lines.append(f"• private mode: {state}")
    if settings.options or settings.suffix:
        lines.append(f"• /prefer: {len(settings.options)} options, suffix "
                     f"{'`' + settings.suffix + '`' if settings.suffix else '—'}")
    return "\n".join(lines)


def describe_options(settings: MemberSettings) -> str:
    if not settings.options:
        return "No options yet: `/prefer option set name:portrait value:--ar 2:3 --stylize 250`."
    lines = ["**Your options** (write `--name` in a prompt):"]
    lines += [f"• `--{name}` → `{value}`" for name, value in sorted(settings.options.items())]
    if settings.suffix:
        lines.append(f"Suffix on every prompt: `{settings.suffix}`")
    return "\n".join(lines)[:1990]


async def check_as_prompt(interaction: AtelierInteraction, text: str, what: str) -> None:
    """`text` must work inside a prompt, as /imagine would read it (its permutations, its flags)."""
    check_text(text, what)
    try:
        for prompt in expand_prompt(f"preference check {text}"):
            build_request(RequestDraft(prompt=prompt), interaction.client.services.registry)
    except AtelierError as exc:
        raise InvalidRequest(f"Not saved: {exc.user_message}") from None


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


class Preferences(commands.Cog):
    """/prefer, as Midjourney's: custom options and a suffix, per member (MemberSettings)."""

    prefer = app_commands.Group(name="prefer", description="Your custom options and prompt suffix")
    option = app_commands.Group(name="option", description="Custom options: --name for saved flags",
                                parent=prefer)

    def __init__(self, bot: commands.Bot) -> None:
        self.bot = bot

    @option.command(name="set", description="Save --name as text and flags; no value removes it")
    @app_commands.describe(name="The option's name, used as --name", value="What --name stands for")
    async def option_set(self, interaction: AtelierInteraction, name: app_commands.Range[str, 1, 34],
                         value: app_commands.Range[str, 1, 300] | None = None) -> None:
        db, user_id = interaction.client.services.db, interaction.user.id
        options = dict((await MEMBER.get(db, user_id)).options)
        if value is None:
            key = name.strip().lstrip("-—–").lower()
            if options.pop(key, None) is None:
                raise InvalidRequest(f"You have no option `--{key[:34]}`.")
            done = f"Removed `--{key}`."
        else:
            key = check_option(name, value, options)
            await check_as_prompt(interaction, value, f"`--{key}`")
            options[key] = " ".join(value.split())
            done = f"Saved: `--{key}` → `{options[key]}`."
        current = await MEMBER.set(db, user_id, {"options": options or None})
        await reply(interaction, f"{done}\n{describe_options(current)}", ephemeral=True)

    @option.command(name="list", description="Your custom options and suffix")
    async def option_list(self, interaction: AtelierInteraction) -> None:
        current = await MEMBER.get(interaction.client.services.db, interaction.user.id)
        await reply(interaction, describe_options(current), ephemeral=True)

    @prefer.command(name="suffix", description="Text and flags added to every prompt; no value clears it")
    async def suffix(self, interaction: AtelierInteraction,
                     value: app_commands.Range[str, 1, 300] | None = None) -> None:
        if value is not None:
            await check_as_prompt(interaction, value, "The suffix")
            value = " ".join(value.split())
        await MEMBER.set(interaction.client.services.db, interaction.user.id, {"suffix": value})
        await reply(interaction, f"Suffix set: `{value}`." if value else "Suffix cleared.", ephemeral=True)


async def setup(bot: commands.Bot) -> None:
    await bot.add_cog(Preferences(bot))
    await bot.add_cog(UserSettings(bot))
