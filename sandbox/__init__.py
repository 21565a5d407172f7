"""A Discord-compatible server (REST + gateway) that drives the real discord.py, for tests and demos.

    sb = Sandbox()
    await sb.start()                      # 127.0.0.1, any free port
    # point discord.py at it: discord.http.Route.BASE = sb.api_base and
    # discord.gateway.DiscordWebSocket.DEFAULT_GATEWAY = yarl.URL(sb.gateway_url); start the bot
    await sb.wait_until_ready()
    inter = await sb.slash(sb.users["alice"], sb.channel("art"), "imagine", {"prompt": "a cat"})
    await inter.wait_ack()                # the callback type, 4-9
    grid = await sb.wait_for(lambda: inter.original and inter.original.attachments and inter.original)
    await sb.click(sb.users["bob"], grid, grid.buttons()[0]["custom_id"])
"""

from sandbox.interactions import Interaction, RecordedCall
from sandbox.server import Sandbox, SandboxError
from sandbox.world import MANAGE_GUILD, Attachment, Channel, Guild, Message, Role, User

__all__ = [
    "MANAGE_GUILD",
    "Attachment",
    "Channel",
    "Guild",
    "Interaction",
    "Message",
    "RecordedCall",
    "Role",
    "Sandbox",
    "SandboxError",
    "User",
]
