"""A sandbox and a bare discord.py client with a small command tree, shared by the sandbox tests."""

from __future__ import annotations

import asyncio
import contextlib
import io
from collections.abc import AsyncIterator, Iterator
from typing import Any

import discord
import pytest
import yarl
from discord import app_commands

from sandbox import Sandbox


@contextlib.contextmanager
def pointed_at(sb: Sandbox) -> Iterator[None]:
    """discord.py's two process-wide endpoints, pointed at the sandbox and restored afterwards."""
    old_base = discord.http.Route.BASE
    old_gw = discord.gateway.DiscordWebSocket.DEFAULT_GATEWAY
    discord.http.Route.BASE = sb.api_base
    discord.gateway.DiscordWebSocket.DEFAULT_GATEWAY = yarl.URL(sb.gateway_url)
    try:
        yield
    finally:
        discord.http.Route.BASE = old_base
        discord.gateway.DiscordWebSocket.DEFAULT_GATEWAY = old_gw


class PanelView(discord.ui.View):
    def __init__(self) -> None:
        super().__init__(timeout=None)

    @discord.ui.button(label="Go", custom_id="panel:go", emoji="🔄")
    async def go(self, interaction: discord.Interaction, button: discord.ui.Button[Any]) -> None:
        await interaction.response.edit_message(content=f"clicked by {interaction.user.name}")

    @discord.ui.button(label="Slow", custom_id="panel:slow")
    async def slow(self, interaction: discord.Interaction, button: discord.ui.Button[Any]) -> None:
        await interaction.response.defer()  # type 6: edit the panel later
        await interaction.edit_original_response(content="slow done", view=None)
        await interaction.followup.send("slow finished")

    @discord.ui.select(custom_id="panel:size",
                       options=[discord.SelectOption(label=s) for s in ("S", "M", "L")])
    async def size(self, interaction: discord.Interaction, select: discord.ui.Select[Any]) -> None:
        await interaction.response.send_message(f"size {select.values[0]}", ephemeral=True)


class CardView(discord.ui.View):
    def __init__(self) -> None:
        super().__init__(timeout=None)

    @discord.ui.button(label="Rename", custom_id="card:rename")
    async def rename(self, interaction: discord.Interaction, button: discord.ui.Button[Any]) -> None:
        await interaction.response.send_modal(RenameModal())

    @discord.ui.button(label="Flip", custom_id="card:flip")
    async def flip(self, interaction: discord.Interaction, button: discord.ui.Button[Any]) -> None:
        # Type 7 with a new file: the old attachment is dropped because it is not listed.
        back = discord.File(io.BytesIO(b"back"), filename="back.png")
        await interaction.response.edit_message(content="back", attachments=[back], view=None)


class RenameModal(discord.ui.Modal, title="Rename"):
    name: discord.ui.TextInput[Any] = discord.ui.TextInput(label="Name", custom_id="name")
    note: discord.ui.TextInput[Any] = discord.ui.TextInput(label="Note", custom_id="note", required=False,
                                                           default="none")

    async def on_submit(self, interaction: discord.Interaction) -> None:
        # Opened from a button: the submit carries that message, so type 7 may edit it.
        await interaction.response.edit_message(content=f"renamed {self.name.value} ({self.note.value})")


class AskModal(discord.ui.Modal, title="Ask"):
    answer: discord.ui.TextInput[Any] = discord.ui.TextInput(label="Answer", custom_id="answer")

    async def on_submit(self, interaction: discord.Interaction) -> None:
        await interaction.response.send_message(f"got {self.answer.value}", ephemeral=True)


class SandboxBot(discord.Client):
    def __init__(self) -> None:
        super().__init__(intents=discord.Intents.default(), guild_ready_timeout=0.1)
        self.tree = app_commands.CommandTree(self)
        self.last: dict[str, discord.Interaction] = {}
        self.seen_messages: list[discord.Message] = []
        self._add_commands()

    async def on_message(self, message: discord.Message) -> None:
        self.seen_messages.append(message)

    def _add_commands(self) -> None:
        tree = self.tree

        @tree.command(description="Echo an image back, reversed")
        async def echo(interaction: discord.Interaction, text: str, count: int,
                       image: discord.Attachment | None = None) -> None:
            self.last["echo"] = interaction
            await interaction.response.defer(thinking=True)
            files = []
            if image is not None:
                data = await image.read()
                files.append(discord.File(fp=io.BytesIO(data[::-1]), filename="echo.bin"))
            await interaction.followup.send(f"{text} x{count}", files=files)

        @tree.command(description="Who am I")
        async def whoami(interaction: discord.Interaction) -> None:
            perms = interaction.permissions
            nsfw = getattr(interaction.channel, "nsfw", None)
            await interaction.response.send_message(
                f"{interaction.user.name} manage_guild={perms.manage_guild} nsfw={nsfw}", ephemeral=True)

        @tree.command(description="A panel with a persistent button")
        async def panel(interaction: discord.Interaction) -> None:
            self.last["panel"] = interaction
            await interaction.response.send_message("panel", view=PanelView())

        @tree.command(description="Several followups")
        async def multi(interaction: discord.Interaction) -> None:
            await interaction.response.send_message("one")
            two = await interaction.followup.send("two", wait=True)
            await two.edit(content="two edited")
            await interaction.followup.send("secret", ephemeral=True)
            await interaction.delete_original_response()

        @tree.command(description="A card: a file in the first response")
        async def card(interaction: discord.Interaction) -> None:
            front = discord.File(io.BytesIO(b"front"), filename="front.png")
            await interaction.response.send_message("front", file=front, view=CardView())

        @tree.command(description="Ask with a modal")
        async def ask(interaction: discord.Interaction) -> None:
            await interaction.response.send_modal(AskModal())

        @tree.command(description="Pick a model")
        async def pick(interaction: discord.Interaction, model: str) -> None:
            await interaction.response.send_message(f"picked {model}")

        @pick.autocomplete("model")
        async def pick_models(interaction: discord.Interaction,
                              current: str) -> list[app_commands.Choice[str]]:
            names = ["tiny", "sd15", "sdxl", "turbo"]
            return [app_commands.Choice(name=n, value=n) for n in names if current in n]

        @tree.command(description="Servers only")
        @app_commands.allowed_contexts(guilds=True, dms=False, private_channels=False)
        async def serveronly(interaction: discord.Interaction) -> None:
            await interaction.response.send_message("in a server")

        @tree.context_menu(name="Quote")
        async def quote(interaction: discord.Interaction, message: discord.Message) -> None:
            await interaction.response.send_message(f"> {message.content}")

    async def start_on(self, sb: Sandbox) -> asyncio.Task[None]:
        await self.login(sb.bot_token)
        task = asyncio.create_task(self.connect())
        await asyncio.wait_for(self.wait_until_ready(), 30)
        guild = discord.Object(id=sb.guild.id)
        self.tree.copy_global_to(guild=guild)
        await self.tree.sync(guild=guild)
        return task


@pytest.fixture(scope="module")
async def sandbox() -> AsyncIterator[Sandbox]:
    sb = Sandbox()
    await sb.start()
    with pointed_at(sb):
        yield sb
    await sb.stop()


@pytest.fixture(scope="module")
async def bot(sandbox: Sandbox) -> AsyncIterator[SandboxBot]:
    client = SandboxBot()
    task = await client.start_on(sandbox)
    yield client
    await client.close()
    with contextlib.suppress(asyncio.CancelledError, Exception):
        await asyncio.wait_for(task, 5)


@pytest.fixture(autouse=True)
def _calm(sandbox: Sandbox) -> Iterator[None]:
    """Each test starts without faults and with Discord's own token lifetime."""
    yield
    sandbox.set_fault_rate(0.0)
    sandbox.faults.max_consecutive = 2
    sandbox.set_latency(0.0)
    sandbox.token_ttl = 900.0
    sandbox.ack_deadline = 3.0
