"""/prefer personalize show | reset: the member's personal style (`--p`, bot/personal.py).

/prefer is the member's preferences group; when another extension already made it (custom options and a
suffix), `personalize` joins that group instead of registering a second /prefer (Discord allows one
top-level command per name)."""

from __future__ import annotations

from discord import app_commands
from discord.ext import commands

from bot.interaction import AtelierInteraction
from bot.personal import NO_STYLE_YET, current_style, describe_style
from generation.errors import InvalidRequest


async def show(interaction: AtelierInteraction) -> None:
    try:
        style = await current_style(interaction)
    except InvalidRequest as exc:
        if exc.user_message != NO_STYLE_YET:
            raise
        await interaction.response.send_message(NO_STYLE_YET, ephemeral=True)
        return
    registry = interaction.client.services.registry
    adapters = [n for n in registry.names() if registry.spec(n).ip_adapter is not None]
    # Say where the images count: on a model without an IP-Adapter `--p` is the phrases and LoRA alone.
    where = (f" The images join as a style reference (`--sref`) in /imagine on {', '.join(adapters)}; on "
             "other models `--p` is the words and LoRA." if adapters else
             " This server has no model with image references, so `--p` is the words and LoRA.")
    await interaction.response.send_message(
        f"Your personal style {describe_style(style)}. Use it with `--p`; older versions with "
        f"`--p v1` … `--p v{style.version}`.{where if style.images else ''}", ephemeral=True)


async def reset(interaction: AtelierInteraction) -> None:
    store = interaction.client.services.db.personal
    await store.reset(interaction.user.id)
    latest = await store.latest(interaction.user.id)
    kept = f" Your versions v1–v{latest.version} stay usable as `--p v1` …" if latest else ""
    await interaction.response.send_message(
        f"Reset: `--p` now learns only from the images you star from here on.{kept}", ephemeral=True)


def personalize_group() -> app_commands.Group:
    """A new group per bot (a command belongs to one parent; tests run several bots in one process)."""
    group = app_commands.Group(name="personalize", description="Your personal style (--p), learnt from stars")
    group.add_command(app_commands.Command(
        name="show", description="Your personal style now, learnt from the images you starred",
        callback=show))
    group.add_command(app_commands.Command(
        name="reset", description="Start your personal style again from the images you star next",
        callback=reset))
    return group


def _prefer(bot: commands.Bot) -> tuple[app_commands.Group, bool]:
    """The /prefer group (someone else's, or a new one) and whether it is ours."""
    existing = bot.tree.get_command("prefer")
    if isinstance(existing, app_commands.Group):
        return existing, False
    return app_commands.Group(name="prefer", description="Your preferences"), True


async def setup(bot: commands.Bot) -> None:
    prefer, ours = _prefer(bot)
    prefer.add_command(personalize_group())
    if ours:
        bot.tree.add_command(prefer)


async def teardown(bot: commands.Bot) -> None:
    prefer = bot.tree.get_command("prefer")
    if isinstance(prefer, app_commands.Group):
        prefer.remove_command("personalize")
        if not prefer.commands:
            bot.tree.remove_command("prefer")
