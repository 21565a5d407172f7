"""The gateway websocket: HELLO, IDENTIFY/READY, GUILD_CREATE, heartbeats, RESUME with replay.

Events are buffered per session with their sequence numbers, so a client that RESUMEs after a
dropped socket gets every event it missed, in order, exactly once.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import secrets
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from aiohttp import WSMsgType, web

if TYPE_CHECKING:
    from sandbox.server import Sandbox

_log = logging.getLogger(__name__)

OP_DISPATCH = 0
OP_HEARTBEAT = 1
OP_IDENTIFY = 2
OP_PRESENCE = 3
OP_RESUME = 6
OP_RECONNECT = 7
OP_REQUEST_MEMBERS = 8
OP_INVALID_SESSION = 9
OP_HELLO = 10
OP_HEARTBEAT_ACK = 11

CLOSE_AUTH_FAILED = 4004
BUFFER_LIMIT = 5000


@dataclass
class GatewaySession:
    id: str
    intents: int
    seq: int = 0
    buffer: list[dict[str, Any]] = field(default_factory=list)
    ws: web.WebSocketResponse | None = None
    sent_upto: int = 0
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    resumes: int = 0


class Gateway:
    def __init__(self, sandbox: Sandbox, heartbeat_interval_ms: int = 41_250) -> None:
        self._sandbox = sandbox
        self.heartbeat_interval_ms = heartbeat_interval_ms
        self.sessions: dict[str, GatewaySession] = {}
        self._newest: GatewaySession | None = None
        self.ready = asyncio.Event()
        self._sockets: set[web.WebSocketResponse] = set()
        self.identifies = 0
        self.resumes = 0

    # -- connection handling -------------------------------------------------------------

    async def handle(self, request: web.Request) -> web.StreamResponse:
        ws = web.WebSocketResponse(heartbeat=None, autoping=True, max_msg_size=0)
        await ws.prepare(request)
        self._sockets.add(ws)
        session: GatewaySession | None = None
        try:
            await self._send(ws, {"op": OP_HELLO, "d": {"heartbeat_interval": self.heartbeat_interval_ms}})
            async for msg in ws:
                if msg.type is not WSMsgType.TEXT:
                    continue
                payload = json.loads(msg.data)
                op = payload.get("op")
                data = payload.get("d")
                if op == OP_HEARTBEAT:
                    await self._send(ws, {"op": OP_HEARTBEAT_ACK, "d": None})
                elif op == OP_IDENTIFY:
                    session = await self._identify(ws, data)
                    if session is None:
                        break
                elif op == OP_RESUME:
                    session = await self._resume(ws, data)
                    if session is None:
                        break
                elif op == OP_REQUEST_MEMBERS:
                    await self._members_chunk(ws, data)
                # PRESENCE and voice ops need no answer.
        except (ConnectionResetError, asyncio.CancelledError):
            pass
        finally:
            self._sockets.discard(ws)
            if session is not None and session.ws is ws:
                session.ws = None
        return ws

    async def _identify(self, ws: web.WebSocketResponse, data: dict[str, Any]) -> GatewaySession | None:
        sb = self._sandbox
        if data.get("token") != sb.bot_token:
            await ws.close(code=CLOSE_AUTH_FAILED, message=b"Authentication failed.")
            return None
        self.identifies += 1
        session = GatewaySession(id=secrets.token_hex(16), intents=int(data.get("intents", 0)))
        self.sessions[session.id] = session
        self._newest = session
        async with session.lock:
            session.ws = ws
            ready = {
                "v": 10,
                "user": sb.bot_user.payload() | {"verified": True, "mfa_enabled": False, "email": None},
                "guilds": [{"id": str(g.id), "unavailable": True} for g in sb.bot_guilds()],
                "session_id": session.id,
                "resume_gateway_url": sb.gateway_url,
                "shard": [0, 1],
                "application": {"id": str(sb.application_id), "flags": 0},
                "private_channels": [],
                "relationships": [],
                "user_settings": {},
                "presences": [],
                "session_type": "normal",
                "auth_session_id_hash": "",
            }
            await self._emit(session, "READY", ready, held=True)
            for guild in sb.bot_guilds():
                await self._emit(session, "GUILD_CREATE", guild.payload(), held=True)
        self.ready.set()
        return session

    async def _resume(self, ws: web.WebSocketResponse, data: dict[str, Any]) -> GatewaySession | None:
        sb = self._sandbox
        session = self.sessions.get(str(data.get("session_id")))
        if data.get("token") != sb.bot_token or session is None:
            # d=false: not resumable, the client must IDENTIFY again.
            await self._send(ws, {"op": OP_INVALID_SESSION, "d": False})
            return None
        last = int(data.get("seq") or 0)
        if session.buffer and session.buffer[0]["s"] > last + 1:
            # Events the client missed were trimmed from the buffer: it cannot resume.
            await self._send(ws, {"op": OP_INVALID_SESSION, "d": False})
            return None
        async with session.lock:
            old = session.ws
            if old is not None and old is not ws:
                with contextlib.suppress(Exception):
                    await old.close(code=4000)
            for event in session.buffer:
                if event["s"] > last:
                    await self._send(ws, event)
            session.ws = ws
            session.sent_upto = session.seq
            await self._send(ws, {"op": OP_DISPATCH, "t": "RESUMED", "s": None, "d": {}})
        session.resumes += 1
        self.resumes += 1
        return session

    async def _members_chunk(self, ws: web.WebSocketResponse, data: dict[str, Any]) -> None:
        guild = self._sandbox.guilds.get(int(data.get("guild_id", 0)))
        if guild is None:
            return
        chunk = {
            "guild_id": str(guild.id),
            "members": [m.payload() for m in guild.members.values()],
            "chunk_index": 0,
            "chunk_count": 1,
            "not_found": [],
            "nonce": data.get("nonce"),
        }
        await self._send(ws, {"op": OP_DISPATCH, "t": "GUILD_MEMBERS_CHUNK", "s": None, "d": chunk})

    # -- dispatching ----------------------------------------------------------------------

    async def dispatch(
        self,
        event: str,
        data: dict[str, Any],
        *,
        newest_only: bool = False,
        shape: Callable[[GatewaySession, dict[str, Any]], dict[str, Any] | None] | None = None,
    ) -> None:
        """Send an event to every session (or only the newest one, as Discord does for interactions).

        Disconnected sessions buffer it for RESUME. `shape` adapts the payload per session
        (intents) or returns None to skip that session.
        """
        targets = [self._newest] if newest_only and self._newest else list(self.sessions.values())
        for session in targets:
            if session is None:
                continue
            payload = shape(session, data) if shape else data
            if payload is None:
                continue
            await self._emit(session, event, payload)

    async def _emit(
        self, session: GatewaySession, event: str, data: dict[str, Any], *, held: bool = False
    ) -> None:
        # The sequence number is taken before awaiting the lock, and the lock is FIFO, so the
        # wire order is the sequence order.
        session.seq += 1
        frame = {"op": OP_DISPATCH, "t": event, "s": session.seq, "d": data}
        session.buffer.append(frame)
        if len(session.buffer) > BUFFER_LIMIT:
            del session.buffer[: len(session.buffer) - BUFFER_LIMIT]
        if held:
            # The caller (_identify) already holds the session lock.
            await self._deliver(session, frame)
            return
        async with session.lock:
            await self._deliver(session, frame)

    async def _deliver(self, session: GatewaySession, frame: dict[str, Any]) -> None:
        ws = session.ws
        if ws is None or ws.closed or frame["s"] <= session.sent_upto:
            return
        try:
            await self._send(ws, frame)
            session.sent_upto = frame["s"]
        except (ConnectionResetError, RuntimeError):
            session.ws = None

    @staticmethod
    async def _send(ws: web.WebSocketResponse, payload: dict[str, Any]) -> None:
        # Always text frames: discord.py only zlib-decompresses binary ones.
        await ws.send_str(json.dumps(payload, separators=(",", ":")))

    # -- faults ---------------------------------------------------------------------------

    @property
    def connected(self) -> bool:
        return any(s.ws is not None and not s.ws.closed for s in self.sessions.values())

    async def drop(self, code: int = 4000) -> None:
        """Close every bot socket from the server side; the sessions stay resumable."""
        for session in self.sessions.values():
            ws = session.ws
            session.ws = None
            if ws is not None:
                with contextlib.suppress(Exception):
                    await ws.close(code=code, message=b"sandbox dropped the connection")

    async def invalidate(self, resumable: bool = False) -> None:
        """Send INVALID_SESSION to every connected socket; non-resumable sessions are forgotten."""
        for sid, session in list(self.sessions.items()):
            ws = session.ws
            if ws is not None and not ws.closed:
                with contextlib.suppress(Exception):
                    await self._send(ws, {"op": OP_INVALID_SESSION, "d": resumable})
            if not resumable:
                del self.sessions[sid]
                if self._newest is session:
                    self._newest = None

    async def request_reconnect(self) -> None:
        for session in self.sessions.values():
            ws = session.ws
            if ws is not None and not ws.closed:
                with contextlib.suppress(Exception):
                    await self._send(ws, {"op": OP_RECONNECT, "d": None})

    async def close_all(self) -> None:
        for ws in list(self._sockets):
            with contextlib.suppress(Exception):
                await ws.close(code=1001)
