"""A Discord-compatible server (REST + gateway) that drives the real discord.py, for tests and demos."""

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
