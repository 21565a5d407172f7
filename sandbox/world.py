"""The sandbox's model of Discord: guilds, channels, users, roles, permissions and messages.

Payload builders here shape every object exactly as discord.py parses it (see DESIGN.md §4): a
missing key in a gateway payload raises inside discord.py's parser and kills the client.
"""

from __future__ import annotations

import copy
import itertools
import threading
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

DISCORD_EPOCH_MS = 1_420_070_400_000

# Permission bits (Discord's documented values).
CREATE_INSTANT_INVITE = 1 << 0
ADMINISTRATOR = 1 << 3
MANAGE_CHANNELS = 1 << 4
MANAGE_GUILD = 1 << 5
ADD_REACTIONS = 1 << 6
VIEW_CHANNEL = 1 << 10
SEND_MESSAGES = 1 << 11
MANAGE_MESSAGES = 1 << 13
EMBED_LINKS = 1 << 14
ATTACH_FILES = 1 << 15
READ_MESSAGE_HISTORY = 1 << 16
USE_EXTERNAL_EMOJIS = 1 << 18
USE_APPLICATION_COMMANDS = 1 << 31
ALL_PERMISSIONS = (1 << 53) - 1

DEFAULT_EVERYONE = (
    CREATE_INSTANT_INVITE
    | ADD_REACTIONS
    | VIEW_CHANNEL
    | SEND_MESSAGES
    | EMBED_LINKS
    | ATTACH_FILES
    | READ_MESSAGE_HISTORY
    | USE_EXTERNAL_EMOJIS
    | USE_APPLICATION_COMMANDS
)

# Message flags.
FLAG_EPHEMERAL = 1 << 6
FLAG_LOADING = 1 << 7

# Intents the sandbox honours when dispatching.
INTENT_GUILD_MESSAGES = 1 << 9
INTENT_DIRECT_MESSAGES = 1 << 12
INTENT_MESSAGE_CONTENT = 1 << 15


class SnowflakeFactory:
    """Time-ordered ids, so discord.py's `snowflake_time` gives sensible creation times."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._counter = itertools.count()

    def next(self) -> int:
        with self._lock:
            ms = int(time.time() * 1000) - DISCORD_EPOCH_MS
            return (ms << 22) | (next(self._counter) & 0x3FFFFF)


def iso_now() -> str:
    return datetime.now(UTC).isoformat()


@dataclass
class User:
    id: int
    name: str
    bot: bool = False

    def payload(self) -> dict[str, Any]:
        return {
            "id": str(self.id),
            "username": self.name,
            "discriminator": "0",
            "global_name": self.name,
            "avatar": None,
            "bot": self.bot,
            "system": False,
            "public_flags": 0,
            "flags": 0,
        }


@dataclass
class Role:
    id: int
    guild_id: int
    name: str
    permissions: int
    position: int = 1

    def payload(self) -> dict[str, Any]:
        return {
            "id": str(self.id),
            "name": self.name,
            "color": 0,
            "colors": {"primary_color": 0, "secondary_color": None, "tertiary_color": None},
            "hoist": False,
            "icon": None,
            "unicode_emoji": None,
            "position": self.position,
            "permissions": str(self.permissions),
            "managed": False,
            "mentionable": False,
            "flags": 0,
        }


@dataclass
class Member:
    user: User
    guild_id: int
    role_ids: list[int] = field(default_factory=list)
    joined_at: str = field(default_factory=iso_now)

    def payload(self, *, with_user: bool = True, permissions: int | None = None) -> dict[str, Any]:
        data: dict[str, Any] = {
            "nick": None,
            "avatar": None,
            "banner": None,
            "roles": [str(r) for r in self.role_ids],
            "joined_at": self.joined_at,
            "premium_since": None,
            "deaf": False,
            "mute": False,
            "flags": 0,
            "pending": False,
            "communication_disabled_until": None,
        }
        if with_user:
            data["user"] = self.user.payload()
        if permissions is not None:
            data["permissions"] = str(permissions)
        return data


# Channel types and interaction contexts (Discord's documented values).
GUILD_TEXT = 0
DM = 1
CONTEXT_GUILD = 0
CONTEXT_BOT_DM = 1
CONTEXT_PRIVATE_CHANNEL = 2


@dataclass
class Channel:
    id: int
    guild_id: int | None  # None: a DM channel between `recipient` and the bot
    name: str
    nsfw: bool = False
    position: int = 0
    type: int = GUILD_TEXT
    recipient: User | None = None

    @property
    def is_dm(self) -> bool:
        return self.guild_id is None

    def integration_owners(self) -> dict[str, str]:
        """`authorizing_integration_owners` of an interaction here: the guild of a guild install, or "0"
        in the bot's own DM (Discord's documented value)."""
        return {"0": str(self.guild_id or 0)}

    def payload(self) -> dict[str, Any]:
        if self.guild_id is None:
            # A DM channel as Discord sends it: no guild, no name, its recipient.
            return {
                "id": str(self.id),
                "type": self.type,
                "last_message_id": None,
                "flags": 0,
                "recipients": [self.recipient.payload()] if self.recipient is not None else [],
            }
        return {
            "id": str(self.id),
            "type": self.type,
            "guild_id": str(self.guild_id),
            "name": self.name,
            "position": self.position,
            "permission_overwrites": [],
            "nsfw": self.nsfw,
            "topic": None,
            "last_message_id": None,
            "rate_limit_per_user": 0,
            "parent_id": None,
            "flags": 0,
        }


@dataclass
class Guild:
    id: int
    name: str
    owner_id: int
    channels: dict[int, Channel] = field(default_factory=dict)
    roles: dict[int, Role] = field(default_factory=dict)
    members: dict[int, Member] = field(default_factory=dict)
    # Server boost level: it sets the upload limit per file (see upload_limit).
    premium_tier: int = 0
    # A fault on demand: a limit below what the boost tier says (Discord has lowered limits before,
    # and clients only compute them), to prove the bot copes with a 413 it did not predict.
    upload_limit_override: int | None = None

    @property
    def upload_limit(self) -> int:
        """Bytes per uploaded file, as Discord enforces it (10 MiB unboosted, 50 / 100 MiB at tier 2 / 3)."""
        if self.upload_limit_override is not None:
            return self.upload_limit_override
        return {2: 50, 3: 100}.get(self.premium_tier, 10) * 1024 * 1024

    @property
    def everyone(self) -> Role:
        # Discord's @everyone role shares the guild's id.
        return self.roles[self.id]

    def permissions_of(self, user_id: int) -> int:
        """Guild-level permissions, computed from roles as Discord does (no channel overwrites)."""
        if user_id == self.owner_id:
            return ALL_PERMISSIONS
        perms = self.everyone.permissions
        member = self.members.get(user_id)
        if member is not None:
            for rid in member.role_ids:
                role = self.roles.get(rid)
                if role is not None:
                    perms |= role.permissions
        if perms & ADMINISTRATOR:
            return ALL_PERMISSIONS
        return perms

    def payload(self) -> dict[str, Any]:
        """The GUILD_CREATE payload; member_count equals len(members) so discord.py never chunks."""
        return {
            "id": str(self.id),
            "name": self.name,
            "icon": None,
            "splash": None,
            "discovery_splash": None,
            "owner_id": str(self.owner_id),
            "afk_channel_id": None,
            "afk_timeout": 300,
            "verification_level": 0,
            "default_message_notifications": 0,
            "explicit_content_filter": 0,
            "roles": [r.payload() for r in self.roles.values()],
            "emojis": [],
            "stickers": [],
            "features": [],
            "mfa_level": 0,
            "application_id": None,
            "system_channel_id": None,
            "system_channel_flags": 0,
            "rules_channel_id": None,
            "vanity_url_code": None,
            "description": None,
            "banner": None,
            "premium_tier": self.premium_tier,
            "premium_subscription_count": 0,
            "preferred_locale": "en-US",
            "public_updates_channel_id": None,
            "nsfw_level": 0,
            "premium_progress_bar_enabled": False,
            "joined_at": iso_now(),
            "large": False,
            "unavailable": False,
            "member_count": len(self.members),
            "voice_states": [],
            "members": [m.payload() for m in self.members.values()],
            "channels": [c.payload() for c in self.channels.values()],
            "threads": [],
            "presences": [],
            "stage_instances": [],
            "guild_scheduled_events": [],
            "soundboard_sounds": [],
        }


@dataclass
class Attachment:
    id: int
    filename: str
    data: bytes
    url: str
    content_type: str
    size: int | None = None  # set when the bytes were not kept (Sandbox(keep_uploads=False))

    def payload(self) -> dict[str, Any]:
        return {
            "id": str(self.id),
            "filename": self.filename,
            "size": len(self.data) if self.size is None else self.size,
            "url": self.url,
            "proxy_url": self.url,
            "content_type": self.content_type,
        }


@dataclass
class Message:
    id: int
    channel_id: int
    guild_id: int | None
    author_id: int
    content: str = ""
    embeds: list[dict[str, Any]] = field(default_factory=list)
    components: list[dict[str, Any]] = field(default_factory=list)
    attachments: list[Attachment] = field(default_factory=list)
    flags: int = 0
    deleted: bool = False
    edits: int = 0
    history: list[dict[str, Any]] = field(default_factory=list)
    interaction_id: int | None = None
    # Who may see an ephemeral message: the user of the interaction that created it.
    visible_to: int | None = None
    webhook_id: int | None = None
    application_id: int | None = None
    edited_at: str | None = None
    created_at: str = field(default_factory=iso_now)
    # (interaction id, interaction type, user payload) for `interaction_metadata`.
    interaction_meta: dict[str, Any] | None = None
    # The message this one replies to (message_reference), if any.
    reference_id: int | None = None

    @property
    def ephemeral(self) -> bool:
        return bool(self.flags & FLAG_EPHEMERAL)

    def buttons(self) -> list[dict[str, Any]]:
        """Every button on the message, flattened out of its action rows."""
        found: list[dict[str, Any]] = []

        def walk(items: list[dict[str, Any]]) -> None:
            for item in items:
                if item.get("type") == 2:
                    found.append(
                        {
                            "custom_id": item.get("custom_id"),
                            "label": item.get("label"),
                            "emoji": item.get("emoji"),
                            "style": item.get("style"),
                            "disabled": bool(item.get("disabled", False)),
                            "url": item.get("url"),
                        }
                    )
                if "components" in item:
                    walk(item["components"])
                if "accessory" in item:
                    walk([item["accessory"]])

        walk(self.components)
        return found

    def message_type(self) -> int:
        # 20 = CHAT_INPUT_COMMAND, 23 = CONTEXT_MENU_COMMAND; component replies are plain (0).
        if self.interaction_meta is None:
            return 0
        return {2: 20}.get(self.interaction_meta.get("type", 0), 0)

    def snapshot(self) -> dict[str, Any]:
        return {
            "content": self.content,
            "embeds": copy.deepcopy(self.embeds),
            "components": copy.deepcopy(self.components),
            "attachments": [a.filename for a in self.attachments],
            "flags": self.flags,
        }

    def payload(self, author: User, member: Member | None) -> dict[str, Any]:
        data: dict[str, Any] = {
            "id": str(self.id),
            "channel_id": str(self.channel_id),
            "author": author.payload(),
            "content": self.content,
            "timestamp": self.created_at,
            "edited_timestamp": self.edited_at,
            "tts": False,
            "mention_everyone": False,
            "mentions": [],
            "mention_roles": [],
            "mention_channels": [],
            "attachments": [a.payload() for a in self.attachments],
            "embeds": copy.deepcopy(self.embeds),
            "reactions": [],
            "pinned": False,
            "type": self.message_type(),
            "flags": self.flags,
            "components": copy.deepcopy(self.components),
        }
        if self.guild_id is not None:
            data["guild_id"] = str(self.guild_id)
            if member is not None:
                data["member"] = member.payload(with_user=False)
        if self.webhook_id is not None:
            data["webhook_id"] = str(self.webhook_id)
        if self.application_id is not None:
            data["application_id"] = str(self.application_id)
        if self.interaction_meta is not None:
            data["interaction_metadata"] = copy.deepcopy(self.interaction_meta)
        if self.reference_id is not None:
            data["message_reference"] = {"type": 0, "message_id": str(self.reference_id),
                                         "channel_id": str(self.channel_id)}
            if self.guild_id is not None:
                data["message_reference"]["guild_id"] = str(self.guild_id)
            if self.interaction_meta is None:
                data["type"] = 19  # REPLY
        return data
