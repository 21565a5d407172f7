"""The discord.py client: minimal intents, extensions, persistent buttons, one error handler."""

from __future__ import annotations

import hashlib
import json
import logging
from typing import Any

import discord
from discord import app_commands
from discord.ext import commands

from bot import buttons, logsafe
from bot.delivery import Delivery
from bot.errors import report_error
from bot.looplag import LoopLag
from bot.services import Services

log = logging.getLogger(__name__)

EXTENSIONS = (
    "bot.extensions.imagine", "bot.extensions.jobs", "bot.extensions.gallery", "bot.extensions.settings",
    "bot.extensions.admin", "bot.extensions.imagine_from_image", "bot.extensions.blend",
    "bot.extensions.style_reference", "bot.extensions.lineage", "bot.extensions.shorten",
    "bot.extensions.describe", "bot.extensions.styles", "bot.extensions.personalize", "bot.extensions.region",
)


class AtelierBot(commands.Bot):
    def __init__(self, services: Services, **options: Any) -> None:
        logsafe.install()  # before the first request: discord.py logs token URLs at DEBUG
        # No privileged intents: slash commands and buttons arrive as interactions.
        intents = discord.Intents.none()
        intents.guilds = True
        options.setdefault("chunk_guilds_at_startup", False)
        # Every command is offered in servers only, unless the operator turned DMs on (Discord then
        # offers them in the bot's DM too; group DMs never). /admin stays guild-only either way.
        options.setdefault("allowed_contexts", app_commands.AppCommandContext(
            guild=True, dm_channel=services.settings.allow_dms, private_channel=False))
        super().__init__(
            command_prefix=commands.when_mentioned,
            intents=intents,
            help_command=None,
            allowed_mentions=discord.AllowedMentions(everyone=False, roles=False, users=True),
            **options,
        )
        self.services = services
        self.loop_lag = LoopLag()
        self.delivery = Delivery(self)
        self.tree.error(self.on_tree_error)

    async def setup_hook(self) -> None:
        self.add_dynamic_items(*buttons.FAMILIES)
        for name in EXTENSIONS:
            await self.load_extension(name)
        await self.sync_commands()
        self.loop_lag.start()
        await self.delivery.start()

    async def close(self) -> None:
        await self.delivery.stop()
        await self.loop_lag.stop()
        await super().close()

    async def on_tree_error(self, interaction: discord.Interaction[Any],
                            error: app_commands.AppCommandError) -> None:
        await report_error(interaction, error)

    async def sync_commands(self) -> None:
        """Guild sync for development is instant; global sync happens only when the command set changed
        (Discord rate-limits it and propagation is slow)."""
        settings = self.services.settings
        if settings.dev_guild_id:
            guild = discord.Object(id=settings.dev_guild_id)
            self.tree.copy_global_to(guild=guild)
            synced = await self.tree.sync(guild=guild)
            log.info("synced %d commands to dev guild %s", len(synced), settings.dev_guild_id)
            return
        payload = [cmd.to_dict(self.tree) for cmd in self.tree.get_commands()]
        digest = hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()
        marker = settings.data_dir / f"commands-{self.application_id}.sha256"
        if marker.exists() and marker.read_text().strip() == digest:
            log.info("global commands unchanged; not syncing")
            return
        synced = await self.tree.sync()
        marker.write_text(digest)
        log.info("synced %d global commands", len(synced))

    async def on_ready(self) -> None:
        log.info("connected as %s (id %s) to %d guilds", self.user, getattr(self.user, "id", None),
                 len(self.guilds))
