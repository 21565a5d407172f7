"""`Sandbox`: a Discord-compatible server (REST + gateway on 127.0.0.1) and a Python API to act as users."""

from __future__ import annotations

import asyncio
import dataclasses
import mimetypes
import secrets
import time
from collections.abc import Callable, Sequence
from typing import Any

from aiohttp import web

from sandbox.faults import FaultPlan
from sandbox.gateway import Gateway, GatewaySession
from sandbox.interactions import (
    APPLICATION_COMMAND,
    ATTACHMENT_SIZE_LIMIT,
    AUTOCOMPLETE,
    MESSAGE_COMPONENT,
    MODAL_SUBMIT,
    Interaction,
    RecordedCall,
)
from sandbox.world import (
    CONTEXT_BOT_DM,
    CONTEXT_GUILD,
    DEFAULT_EVERYONE,
    DM,
    INTENT_DIRECT_MESSAGES,
    INTENT_GUILD_MESSAGES,
    INTENT_MESSAGE_CONTENT,
    MANAGE_GUILD,
    MANAGE_MESSAGES,
    Attachment,
    Channel,
    Guild,
    Member,
    Message,
    Role,
    SnowflakeFactory,
    User,
)

BOT_PERMISSIONS = DEFAULT_EVERYONE | MANAGE_MESSAGES

# Application command option types.
OPT_SUB_COMMAND = 1
OPT_SUB_COMMAND_GROUP = 2
OPT_STRING = 3
OPT_INTEGER = 4
OPT_BOOLEAN = 5
OPT_USER = 6
OPT_CHANNEL = 7
OPT_ROLE = 8
OPT_MENTIONABLE = 9
OPT_NUMBER = 10
OPT_ATTACHMENT = 11


class SandboxError(RuntimeError):
    """A misuse of the sandbox API by a test (unknown command, option or channel)."""


class Sandbox:
    def __init__(self, *, bot_token: str = "sandbox-token", application_id: int = 10_000,
                 keep_uploads: bool = True) -> None:
        self.bot_token = bot_token
        # Tests read uploaded files back; a long benchmark measuring the bot's memory in the same
        # process keeps only their sizes.
        self.keep_uploads = keep_uploads
        self.application_id = application_id
        self.token_ttl: float = 900.0
        # Discord refuses a callback that arrives later than 3 s after the interaction; None disables.
        self.ack_deadline: float | None = 3.0
        self.calls: list[RecordedCall] = []
        self.faults = FaultPlan()
        self.snowflakes = SnowflakeFactory()
        # Newer Discord applications share their id with their bot user.
        self.bot_user = User(id=application_id, name="Atelier", bot=True)
        self.guilds: dict[int, Guild] = {}
        self.users: dict[str, User] = {}
        self._users_by_id: dict[int, User] = {self.bot_user.id: self.bot_user}
        self._channels: dict[int, Channel] = {}
        self._dms: dict[int, Channel] = {}  # user id -> their DM channel with the bot
        self._messages: dict[int, Message] = {}
        self._channel_log: dict[int, list[int]] = {}
        self.attachments: dict[int, Attachment] = {}
        self.global_commands: list[dict[str, Any]] = []
        self.guild_commands: dict[int, list[dict[str, Any]]] = {}
        self.interactions: dict[int, Interaction] = {}
        self._by_token: dict[str, Interaction] = {}
        self.gateway = Gateway(self)
        self._runner: web.AppRunner | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self.host = "127.0.0.1"
        self.port = 0
        from sandbox.oauth import OAuthState

        self.oauth = OAuthState()  # the application's OAuth2 secret, codes and Bearer tokens
        self._build_default_world()

    # -- lifecycle ------------------------------------------------------------------------

    async def start(self, host: str = "127.0.0.1", port: int = 0) -> None:
        from sandbox.rest import build_app

        # asyncio primitives bind to the running loop; create them here, not in __init__.
        self.gateway.ready = asyncio.Event()
        app = build_app(self)
        self._runner = web.AppRunner(app, access_log=None, shutdown_timeout=1.0)
        await self._runner.setup()
        site = web.TCPSite(self._runner, host, port)
        await site.start()
        server = site._server
        assert server is not None and server.sockets  # type: ignore[attr-defined]
        self.host = host
        self.port = server.sockets[0].getsockname()[1]  # type: ignore[attr-defined]

    async def stop(self) -> None:
        await self.gateway.close_all()
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    @property
    def base_url(self) -> str:
        return f"http://{self.host}:{self.port}"

    @property
    def api_base(self) -> str:
        return f"{self.base_url}/api/v10"

    @property
    def gateway_url(self) -> str:
        return f"ws://{self.host}:{self.port}/"

    async def wait_until_ready(self, timeout: float = 30) -> None:  # noqa: ASYNC109 (the lead's API)
        """Until a bot session has identified and received its GUILD_CREATEs."""
        await asyncio.wait_for(self.gateway.ready.wait(), timeout)

    # -- world ----------------------------------------------------------------------------

    def _build_default_world(self) -> None:
        owner = self._new_user("owner")
        self.guild = self.add_guild("Atelier Test", owner=owner)
        self.add_channel(self.guild, "general")
        self.add_channel(self.guild, "art")
        self.add_channel(self.guild, "nsfw-art", nsfw=True)
        moderators = self.add_role(self.guild, "Moderator", MANAGE_GUILD)
        self.add_user("mod", self.guild, roles=(moderators,))
        self.add_user("alice", self.guild)
        self.add_user("bob", self.guild)

    def _new_user(self, name: str) -> User:
        if name in self.users:
            raise SandboxError(f"user {name!r} exists")
        user = User(id=self.snowflakes.next(), name=name)
        self.users[name] = user
        self._users_by_id[user.id] = user
        return user

    def add_guild(self, name: str, *, owner: User | None = None) -> Guild:
        owner = owner or self.users.get("owner") or self._new_user("owner")
        guild = Guild(id=self.snowflakes.next(), name=name, owner_id=owner.id)
        guild.roles[guild.id] = Role(id=guild.id, guild_id=guild.id, name="@everyone",
                                     permissions=DEFAULT_EVERYONE, position=0)
        bot_role = Role(id=self.snowflakes.next(), guild_id=guild.id, name=self.bot_user.name,
                        permissions=BOT_PERMISSIONS)
        guild.roles[bot_role.id] = bot_role
        guild.members[owner.id] = Member(user=owner, guild_id=guild.id)
        guild.members[self.bot_user.id] = Member(user=self.bot_user, guild_id=guild.id,
                                                 role_ids=[bot_role.id])
        self.guilds[guild.id] = guild
        self._schedule_dispatch("GUILD_CREATE", guild.payload)
        return guild

    def add_channel(self, guild: Guild, name: str, nsfw: bool = False) -> Channel:
        channel = Channel(id=self.snowflakes.next(), guild_id=guild.id, name=name, nsfw=nsfw,
                          position=len(guild.channels))
        guild.channels[channel.id] = channel
        self._channels[channel.id] = channel
        self._channel_log[channel.id] = []
        self._schedule_dispatch("CHANNEL_CREATE", channel.payload)
        return channel

    def dm_channel(self, user: User) -> Channel:
        """The DM channel between `user` and the bot (made on first use, as opening a DM does).
        Interactions there carry `user` instead of `member` and no guild; only global commands whose
        `contexts` include the bot's DM are offered."""
        channel = self._dms.get(user.id)
        if channel is None:
            channel = Channel(id=self.snowflakes.next(), guild_id=None, name=f"dm-{user.name}", type=DM,
                              recipient=user)
            self._dms[user.id] = channel
            self._channels[channel.id] = channel
            self._channel_log[channel.id] = []
        return channel

    def delete_channel(self, channel: Channel) -> None:
        """As a moderator deleting a channel: its messages go with it (Discord sends no MESSAGE_DELETE
        for them), and later calls about it get 404 Unknown Channel / Unknown Message."""
        if channel.guild_id is not None:
            self.guilds[channel.guild_id].channels.pop(channel.id, None)
        self._channels.pop(channel.id, None)
        for message_id in self._channel_log.get(channel.id, []):
            message = self.message(message_id)
            if message is not None:
                message.deleted = True
        self._schedule_dispatch("CHANNEL_DELETE", channel.payload)

    def add_role(self, guild: Guild, name: str, permissions: int) -> Role:
        role = Role(id=self.snowflakes.next(), guild_id=guild.id, name=name, permissions=permissions,
                    position=len(guild.roles))
        guild.roles[role.id] = role
        self._schedule_dispatch("GUILD_ROLE_CREATE",
                                lambda: {"guild_id": str(guild.id), "role": role.payload()})
        return role

    def add_user(self, name: str, guild: Guild | None = None, roles: Sequence[Role] = ()) -> User:
        user = self.users.get(name) or self._new_user(name)
        target = guild or self.guild
        target.members[user.id] = Member(user=user, guild_id=target.id, role_ids=[r.id for r in roles])
        return user

    def channel(self, name: str, guild: Guild | None = None) -> Channel:
        target = guild or self.guild
        for ch in target.channels.values():
            if ch.name == name:
                return ch
        raise SandboxError(f"no channel {name!r} in {target.name!r}")

    def bot_guilds(self) -> list[Guild]:
        return [g for g in self.guilds.values() if self.bot_user.id in g.members]

    def user_by_id(self, user_id: int) -> User | None:
        return self._users_by_id.get(user_id)

    def channel_by_id(self, channel_id: int) -> Channel | None:
        return self._channels.get(channel_id)

    def permissions(self, user: User, channel: Channel) -> int:
        if channel.guild_id is None:
            return DEFAULT_EVERYONE  # a DM has no roles: the plain permissions of a private channel
        return self.guilds[channel.guild_id].permissions_of(user.id)

    def _schedule_dispatch(self, event: str, build: Callable[[], dict[str, Any]]) -> None:
        # World edits are synchronous; tell connected bots about them without making callers await.
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            return
        if self.gateway.sessions:
            task = loop.create_task(self.gateway.dispatch(event, build()))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    # -- messages -------------------------------------------------------------------------

    def messages(self, channel: Channel, viewer: User | None = None) -> list[Message]:
        """Not-deleted messages of a channel, oldest first.

        Without `viewer` every message is listed, ephemeral ones included (they carry flags & 64);
        with a viewer, only what that user can see: ephemeral messages of others are left out.
        """
        out = []
        for mid in self._channel_log.get(channel.id, []):
            m = self._messages[mid]
            if m.deleted:
                continue
            if viewer is not None and m.ephemeral and m.visible_to != viewer.id:
                continue
            out.append(m)
        return out

    def message(self, message_id: int) -> Message | None:
        return self._messages.get(message_id)

    def store_attachment(self, channel_id: int, filename: str, data: bytes,
                         content_type: str | None = None) -> Attachment:
        att_id = self.snowflakes.next()
        ctype = content_type or mimetypes.guess_type(filename)[0] or "application/octet-stream"
        url = f"{self.base_url}/cdn/attachments/{channel_id}/{att_id}/{filename}"
        if self.keep_uploads:
            att = Attachment(id=att_id, filename=filename, data=data, url=url, content_type=ctype)
        else:
            att = Attachment(id=att_id, filename=filename, data=b"", url=url, content_type=ctype,
                             size=len(data))
        self.attachments[att_id] = att
        return att

    def message_payload(self, message: Message) -> dict[str, Any]:
        author = self._users_by_id[message.author_id]
        member = None
        if message.guild_id is not None:
            member = self.guilds[message.guild_id].members.get(author.id)
        return message.payload(author, member)

    async def create_message(self, message: Message) -> Message:
        self._messages[message.id] = message
        self._channel_log.setdefault(message.channel_id, []).append(message.id)
        if not message.ephemeral:
            await self._dispatch_message("MESSAGE_CREATE", message)
        return message

    async def message_edited(self, message: Message, before: dict[str, Any]) -> None:
        message.history.append(before)
        message.edits += 1
        message.edited_at = time.strftime("%Y-%m-%dT%H:%M:%S+00:00", time.gmtime())
        if not message.ephemeral:
            await self._dispatch_message("MESSAGE_UPDATE", message)

    async def delete_message(self, message: Message) -> None:
        message.deleted = True
        if not message.ephemeral:
            data = {"id": str(message.id), "channel_id": str(message.channel_id)}
            if message.guild_id is not None:
                data["guild_id"] = str(message.guild_id)
            await self.gateway.dispatch("MESSAGE_DELETE", data, shape=_needs_guild_messages)

    async def _dispatch_message(self, event: str, message: Message) -> None:
        payload = self.message_payload(message)
        bot_id = self.bot_user.id

        def shape(session: GatewaySession, data: dict[str, Any]) -> dict[str, Any] | None:
            intent = INTENT_DIRECT_MESSAGES if message.guild_id is None else INTENT_GUILD_MESSAGES
            if not session.intents & intent:
                return None
            if session.intents & INTENT_MESSAGE_CONTENT or message.author_id == bot_id:
                return data
            if f"<@{bot_id}>" in message.content or f"<@!{bot_id}>" in message.content:
                return data
            # Without the privileged MESSAGE_CONTENT intent Discord blanks other users' messages.
            return data | {"content": "", "embeds": [], "attachments": [], "components": []}

        await self.gateway.dispatch(event, payload, shape=shape)

    async def post_message(self, user: User, channel: Channel, content: str = "",
                           attachments: Sequence[tuple[str, bytes]] = ()) -> Message:
        """A user writes in a channel (MESSAGE_CREATE reaches the bot)."""
        msg = Message(id=self.snowflakes.next(), channel_id=channel.id, guild_id=channel.guild_id,
                      author_id=user.id, content=content)
        msg.attachments = [self.store_attachment(channel.id, name, data) for name, data in attachments]
        return await self.create_message(msg)

    # -- acting as users: interactions ------------------------------------------------------

    def commands(self, guild: Guild | None = None) -> list[dict[str, Any]]:
        """Commands as the bot synced them: global ones, or those of `guild`."""
        if guild is None:
            return list(self.global_commands)
        return list(self.guild_commands.get(guild.id, []))

    def _find_command(self, name: str, channel: Channel, ctype: int = 1) -> dict[str, Any]:
        """The command as Discord would offer it in `channel`. In a DM only global commands exist,
        and only those whose `contexts` include the bot's DM (null contexts: every context); a client
        never shows the others, so asking for one is a test's mistake."""
        scoped = [] if channel.guild_id is None else self.guild_commands.get(channel.guild_id, [])
        for cmd in scoped + self.global_commands:
            if cmd["name"] == name and cmd.get("type", 1) == ctype:
                contexts = cmd.get("contexts")
                context = CONTEXT_BOT_DM if channel.guild_id is None else CONTEXT_GUILD
                if cmd in self.global_commands and contexts is not None and context not in contexts:
                    where = "in DMs" if channel.guild_id is None else "in servers"
                    raise SandboxError(f"command {name!r} is not offered {where} (contexts {contexts})")
                return cmd
        where = " as a global command (DMs have no guild commands)" if channel.guild_id is None else ""
        raise SandboxError(f"command {name!r} (type {ctype}) was not synced{where}")

    def _base_payload(self, itype: int, user: User, channel: Channel, data: dict[str, Any] | None,
                      message: Message | None = None) -> Interaction:
        iid = self.snowflakes.next()
        token = "aW50ZXJhY3Rpb24" + secrets.token_urlsafe(48)
        payload: dict[str, Any] = {
            "id": str(iid),
            "application_id": str(self.application_id),
            "type": itype,
            "token": token,
            "version": 1,
            "channel_id": str(channel.id),
            "locale": "en-US",
            "app_permissions": str(self.permissions(self.bot_user, channel)),
            "entitlements": [],
            "authorizing_integration_owners": channel.integration_owners(),
            "attachment_size_limit": ATTACHMENT_SIZE_LIMIT,
        }
        if channel.guild_id is None:
            # The bot's DM: `user`, not `member`; no guild_id; context 1 (BOT_DM).
            if channel.recipient is None or channel.recipient.id != user.id:
                raise SandboxError(f"{user.name} is not in DM channel {channel.name}")
            payload |= {"channel": channel.payload(), "user": user.payload(), "context": CONTEXT_BOT_DM}
        else:
            guild = self.guilds[channel.guild_id]
            member = guild.members.get(user.id)
            if member is None:
                raise SandboxError(f"{user.name} is not a member of {guild.name}")
            payload |= {
                "guild_id": str(guild.id),
                "guild": {"id": str(guild.id), "locale": "en-US", "features": []},
                "guild_locale": "en-US",
                "channel": channel.payload() | {"permissions": str(self.permissions(user, channel))},
                "member": member.payload(permissions=guild.permissions_of(user.id)),
                "context": CONTEXT_GUILD,
            }
        if data is not None:
            payload["data"] = data
        if message is not None:
            payload["message"] = self.message_payload(message)
        return Interaction(id=iid, token=token, type=itype, user=user, channel=channel,
                           payload=payload, message=message)

    async def _send_interaction(self, inter: Interaction) -> Interaction:
        self.interactions[inter.id] = inter
        self._by_token[inter.token] = inter
        inter.sent_at = time.monotonic()
        await self.gateway.dispatch("INTERACTION_CREATE", inter.payload, newest_only=True)
        return inter

    def _command_options(
        self,
        schema: list[dict[str, Any]],
        options: dict[str, Any],
        channel: Channel,
        resolved: dict[str, dict[str, Any]],
        attachments: dict[str, tuple[str, bytes]],
        focused: str | None,
    ) -> list[dict[str, Any]]:
        by_name = {o["name"]: o for o in schema}
        out: list[dict[str, Any]] = []
        for name, value in options.items():
            opt = by_name.get(name)
            if opt is None:
                raise SandboxError(f"no option {name!r}; synced: {sorted(by_name)}")
            out.append(self._option_value(opt, value, channel, resolved, focused == name))
        for name, (filename, data) in attachments.items():
            opt = by_name.get(name)
            if opt is None or opt["type"] != OPT_ATTACHMENT:
                raise SandboxError(f"no attachment option {name!r}")
            att = self.store_attachment(channel.id, filename, data)
            resolved.setdefault("attachments", {})[str(att.id)] = att.payload() | {"ephemeral": True}
            out.append({"name": name, "type": OPT_ATTACHMENT, "value": str(att.id)})
        return out

    def _option_value(self, opt: dict[str, Any], value: Any, channel: Channel,
                      resolved: dict[str, dict[str, Any]], focused: bool) -> dict[str, Any]:
        otype = opt["type"]
        entry: dict[str, Any] = {"name": opt["name"], "type": otype}
        if focused:
            # Autocomplete sends what the user typed so far, as a string.
            entry["value"] = str(value)
            entry["focused"] = True
            return entry
        if otype == OPT_INTEGER:
            entry["value"] = int(value)
        elif otype == OPT_NUMBER:
            entry["value"] = float(value)
        elif otype == OPT_BOOLEAN:
            entry["value"] = bool(value)
        elif otype in (OPT_USER, OPT_MENTIONABLE) and isinstance(value, User):
            guild = self.guilds.get(channel.guild_id) if channel.guild_id is not None else None
            entry["value"] = str(value.id)
            resolved.setdefault("users", {})[str(value.id)] = value.payload()
            member = guild.members.get(value.id) if guild is not None else None  # no members in a DM
            if guild is not None and member is not None:
                resolved.setdefault("members", {})[str(value.id)] = member.payload(
                    with_user=False, permissions=guild.permissions_of(value.id))
        elif otype == OPT_CHANNEL and isinstance(value, Channel):
            entry["value"] = str(value.id)
            resolved.setdefault("channels", {})[str(value.id)] = {
                "id": str(value.id), "name": value.name, "type": value.type,
                "permissions": str(BOT_PERMISSIONS), "nsfw": value.nsfw, "parent_id": None,
            }
        elif otype == OPT_ROLE and isinstance(value, Role):
            entry["value"] = str(value.id)
            resolved.setdefault("roles", {})[str(value.id)] = value.payload()
        else:
            entry["value"] = value if otype != OPT_STRING else str(value)
        return entry

    def _slash_data(self, channel: Channel, name: str, options: dict[str, Any] | None,
                    subcommand: str | None, group: str | None,
                    attachments: dict[str, tuple[str, bytes]] | None,
                    focused: str | None = None) -> dict[str, Any]:
        cmd = self._find_command(name, channel)
        resolved: dict[str, dict[str, Any]] = {}
        schema = cmd.get("options", [])
        path: list[tuple[str, int]] = []
        if group is not None:
            grp = next((o for o in schema if o["name"] == group and o["type"] == OPT_SUB_COMMAND_GROUP), None)
            if grp is None:
                raise SandboxError(f"no subcommand group {group!r} in /{name}")
            path.append((group, OPT_SUB_COMMAND_GROUP))
            schema = grp.get("options", [])
        if subcommand is not None:
            sub = next((o for o in schema if o["name"] == subcommand and o["type"] == OPT_SUB_COMMAND), None)
            if sub is None:
                raise SandboxError(f"no subcommand {subcommand!r} in /{name}")
            path.append((subcommand, OPT_SUB_COMMAND))
            schema = sub.get("options", [])
        opts = self._command_options(schema, options or {}, channel, resolved, attachments or {}, focused)
        for pname, ptype in reversed(path):
            opts = [{"name": pname, "type": ptype, "options": opts}]
        data: dict[str, Any] = {"id": cmd["id"], "name": name, "type": 1, "options": opts}
        if cmd.get("guild_id"):
            data["guild_id"] = cmd["guild_id"]
        if resolved:
            data["resolved"] = resolved
        return data

    async def slash(self, user: User, channel: Channel, name: str, options: dict[str, Any] | None = None, *,
                    subcommand: str | None = None, group: str | None = None,
                    attachments: dict[str, tuple[str, bytes]] | None = None) -> Interaction:
        """Run a slash command as `user`; option types come from the command as the bot synced it."""
        data = self._slash_data(channel, name, options, subcommand, group, attachments)
        return await self._send_interaction(self._base_payload(APPLICATION_COMMAND, user, channel, data))

    async def autocomplete(self, user: User, channel: Channel, name: str, options: dict[str, Any],
                           focused: str, subcommand: str | None = None,
                           timeout: float = 10, group: str | None = None) -> list[dict[str, Any]]:  # noqa: ASYNC109
        """Type into option `focused`; returns the choices the bot answered with (callback type 8)."""
        if focused not in options:
            options = {**options, focused: ""}
        data = self._slash_data(channel, name, options, subcommand, group, None, focused=focused)
        inter = await self._send_interaction(self._base_payload(AUTOCOMPLETE, user, channel, data))
        await inter.wait_ack(timeout)
        return list(inter.choices or [])

    async def click(self, user: User, message: Message, custom_id: str) -> Interaction:
        """Click the button `custom_id` on `message` (it must be there and enabled)."""
        button = next((b for b in message.buttons() if b["custom_id"] == custom_id), None)
        if button is None:
            raise SandboxError(f"no button {custom_id!r} on message {message.id}")
        if button["disabled"]:
            raise SandboxError(f"button {custom_id!r} is disabled")
        return await self._component(user, message, {"custom_id": custom_id, "component_type": 2})

    async def click_crafted(self, user: User, message: Message, custom_id: str) -> Interaction:
        """Click a button with any `custom_id` on `message`, as if it were there: a message posted before
        a rule changed, or one a modified client claims. The button is added to the interaction's copy
        of the message only (discord.py ignores a custom_id its message does not carry); the stored
        message is unchanged. A custom_id is data from the client: the bot must check what it names."""
        if message.deleted:
            raise SandboxError(f"message {message.id} was deleted")
        row = {"type": 1, "components": [{"type": 2, "style": 2, "label": "crafted", "custom_id": custom_id}]}
        claimed = dataclasses.replace(message, components=[*message.components, row])
        channel = self._channels[message.channel_id]
        inter = self._base_payload(MESSAGE_COMPONENT, user, channel,
                                   {"custom_id": custom_id, "component_type": 2}, message=claimed)
        return await self._send_interaction(inter)

    async def select(self, user: User, message: Message, custom_id: str, values: list[str]) -> Interaction:
        comp = _find_component(message.components, custom_id)
        if comp is None:
            raise SandboxError(f"no select {custom_id!r} on message {message.id}")
        return await self._component(
            user, message, {"custom_id": custom_id, "component_type": comp.get("type", 3), "values": values})

    async def _component(self, user: User, message: Message, data: dict[str, Any]) -> Interaction:
        if message.deleted:
            raise SandboxError(f"message {message.id} was deleted")
        channel = self._channels[message.channel_id]
        inter = self._base_payload(MESSAGE_COMPONENT, user, channel, data, message=message)
        return await self._send_interaction(inter)

    async def submit_modal(self, user: User, channel: Channel, custom_id: str, fields: dict[str, str],
                           message: Message | None = None) -> Interaction:
        """Submit a modal; `fields` maps text input custom_id -> value.

        If the bot opened this modal (callback type 9), its inputs are checked as Discord's client
        would (unknown ids refused, required ones must be filled, pre-filled values kept), and a modal
        opened from a button carries that button's message, as on Discord.
        """
        opener = next((i for i in reversed(self.interactions.values())
                       if i.modal is not None and i.modal.get("custom_id") == custom_id), None)
        values = dict(fields)
        if opener is not None and opener.modal is not None:
            inputs = {c["custom_id"]: c for c in _text_inputs(opener.modal.get("components", []))}
            unknown = set(values) - set(inputs)
            if unknown:
                raise SandboxError(
                    f"modal {custom_id!r} has no inputs {sorted(unknown)}; it has {sorted(inputs)}")
            for cid, comp in inputs.items():
                if cid not in values:
                    if comp.get("required", True) and not comp.get("value"):
                        raise SandboxError(f"modal input {cid!r} is required")
                    values[cid] = comp.get("value") or ""
            if message is None:
                message = opener.message
        rows = [{"type": 1, "components": [{"type": 4, "custom_id": k, "value": v}]}
                for k, v in values.items()]
        data = {"custom_id": custom_id, "components": rows}
        inter = self._base_payload(MODAL_SUBMIT, user, channel, data, message=message)
        return await self._send_interaction(inter)

    async def message_command(self, user: User, channel: Channel, name: str, target: Message) -> Interaction:
        """A message context-menu command on `target`."""
        cmd = self._find_command(name, channel, ctype=3)
        data: dict[str, Any] = {
            "id": cmd["id"], "name": name, "type": 3, "target_id": str(target.id),
            "resolved": {"messages": {str(target.id): self.message_payload(target)}},
        }
        if cmd.get("guild_id"):
            data["guild_id"] = cmd["guild_id"]
        return await self._send_interaction(self._base_payload(APPLICATION_COMMAND, user, channel, data))

    def interaction_by_token(self, token: str) -> Interaction | None:
        return self._by_token.get(token)

    def token_expired(self, inter: Interaction) -> bool:
        return time.monotonic() - inter.sent_at > self.token_ttl

    # -- waiting and faults ------------------------------------------------------------------

    async def wait_for(self, predicate: Callable[[], Any], timeout: float = 30) -> Any:  # noqa: ASYNC109
        """Poll `predicate` until it returns something truthy; returns that value."""
        deadline = time.monotonic() + timeout
        while True:
            value = predicate()
            if value:
                return value
            if time.monotonic() > deadline:
                raise TimeoutError(f"condition not met within {timeout} s")
            await asyncio.sleep(0.02)

    def set_fault_rate(self, rate: float, statuses: Sequence[int] = (429, 500, 502, 503),
                       seed: int = 0) -> None:
        """Fail this share of REST calls (CDN excluded) with the given statuses."""
        self.faults.configure(rate, tuple(statuses), seed)

    def set_latency(self, seconds: float) -> None:
        self.faults.latency = seconds

    async def drop_gateway(self) -> None:
        """Close the bot's gateway socket from the server side; the client RESUMEs."""
        await self.gateway.drop()

    async def invalidate_session(self, resumable: bool = False) -> None:
        """INVALID_SESSION: with resumable=False the client must IDENTIFY again (discord.py waits 5 s)."""
        await self.gateway.invalidate(resumable)

    async def request_reconnect(self) -> None:
        """Op 7 RECONNECT, as Discord sends before moving a session: the client closes and RESUMEs."""
        await self.gateway.request_reconnect()


def _needs_guild_messages(session: GatewaySession, data: dict[str, Any]) -> dict[str, Any] | None:
    return data if session.intents & INTENT_GUILD_MESSAGES else None


def _find_component(items: list[dict[str, Any]], custom_id: str) -> dict[str, Any] | None:
    for item in items:
        if item.get("custom_id") == custom_id:
            return item
        found = _find_component(item.get("components", []), custom_id)
        if found is not None:
            return found
    return None


def _text_inputs(items: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Text inputs of a modal, in action rows (type 1) or labels (type 18)."""
    found: list[dict[str, Any]] = []
    for item in items:
        if item.get("type") == 4:
            found.append(item)
        found.extend(_text_inputs(item.get("components", [])))
        if isinstance(item.get("component"), dict):
            found.extend(_text_inputs([item["component"]]))
    return found
