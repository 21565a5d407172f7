"""REST routes under /api/v10, the interaction callback, webhook followups and the CDN.

One dispatcher handles every API call so that recording, auth, latency and faults apply uniformly.
Responses always carry Content-Type exactly `application/json` (DESIGN.md §4).
"""

from __future__ import annotations

import asyncio
import json
import re
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from aiohttp import BodyPartReader, web

from sandbox.interactions import (
    AUTOCOMPLETE_RESULT,
    CHANNEL_MESSAGE,
    DEFERRED_CHANNEL_MESSAGE,
    DEFERRED_UPDATE_MESSAGE,
    MESSAGE_COMPONENT,
    MODAL,
    UPDATE_MESSAGE,
    Interaction,
    RecordedCall,
)
from sandbox.world import FLAG_EPHEMERAL, FLAG_LOADING, MANAGE_MESSAGES, Message

if TYPE_CHECKING:
    from sandbox.server import Sandbox

Files = dict[int, tuple[str, bytes]]


class ApiError(Exception):
    def __init__(self, status: int, code: int, message: str, errors: dict[str, Any] | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.body: dict[str, Any] = {"message": message, "code": code}
        if errors:
            self.body["errors"] = errors


def unknown_message() -> ApiError:
    return ApiError(404, 10008, "Unknown Message")


def unknown_webhook() -> ApiError:
    return ApiError(404, 10015, "Unknown Webhook")


def invalid_form(field: str, msg: str) -> ApiError:
    return ApiError(400, 50035, "Invalid Form Body",
                    {field: {"_errors": [{"code": "BASE_TYPE_INVALID", "message": msg}]}})


def json_response(data: Any, status: int = 200, headers: dict[str, str] | None = None) -> web.Response:
    # Not web.json_response: it appends "; charset=utf-8" and discord.py then treats the body as text.
    hdrs = {"Content-Type": "application/json"}
    if headers:
        hdrs.update(headers)
    return web.Response(body=json.dumps(data).encode(), status=status, headers=hdrs)


@dataclass
class Call:
    request: web.Request
    params: dict[str, str]
    json: Any
    files: Files
    # When the request arrived (monotonic), before any injected latency.
    at: float = 0.0


Handler = Callable[["RestApi", Call], Awaitable[Any]]


@dataclass
class Route:
    method: str
    pattern: re.Pattern[str]
    handler: Handler
    auth: bool  # bot token required (webhook and callback routes are authorised by their token)


ROUTES: list[Route] = []


def route(method: str, path: str, *, auth: bool = True) -> Callable[[Handler], Handler]:
    regex = re.compile("^" + re.sub(r"\{(\w+)\}", r"(?P<\1>[^/]+)", path) + "$")

    def deco(fn: Handler) -> Handler:
        ROUTES.append(Route(method, regex, fn, auth))
        return fn

    return deco


async def read_body(request: web.Request) -> tuple[Any, Files]:
    files: Files = {}
    if request.content_type.startswith("multipart/"):
        payload: Any = None
        reader = await request.multipart()
        async for part in reader:
            if not isinstance(part, BodyPartReader):
                continue
            data = await part.read()
            name = part.name or ""
            if name == "payload_json":
                payload = json.loads(data)
            else:
                m = re.fullmatch(r"files\[(\d+)\]", name)
                if m:
                    files[int(m.group(1))] = (part.filename or f"file{m.group(1)}", bytes(data))
        return payload, files
    if request.content_type == "application/x-www-form-urlencoded":  # OAuth2's token endpoint
        return dict(await request.post()), files
    raw = await request.read()
    if not raw:
        return None, files
    try:
        return json.loads(raw), files
    except ValueError as exc:
        raise ApiError(400, 50109, "The request body contains invalid JSON.") from exc


class RestApi:
    def __init__(self, sandbox: Sandbox) -> None:
        self.sb = sandbox

    # -- dispatcher -----------------------------------------------------------------------

    async def dispatch(self, request: web.Request) -> web.StreamResponse:
        path = "/" + request.match_info["tail"]
        method = request.method
        at = time.monotonic()
        try:
            body, files = await read_body(request)
        except ApiError as err:
            resp = json_response(err.body, err.status)
            return self._record(method, path, err.status, None, {}, at, request, resp)
        if self.sb.faults.latency > 0:
            await asyncio.sleep(self.sb.faults.latency)
        match = None
        for r in ROUTES:
            if r.method != method:
                continue
            m = r.pattern.match(path)
            if m:
                match = (r, m.groupdict())
                break
        if match is None:
            resp = json_response({"message": "404: Not Found", "code": 0}, 404)
            return self._record(method, path, 404, body, files, at, request, resp)
        rt, params = match
        if rt.auth and request.headers.get("Authorization") != f"Bot {self.sb.bot_token}":
            resp = json_response({"message": "401: Unauthorized", "code": 0}, 401)
            return self._record(method, path, 401, body, files, at, request, resp)
        callback_of = params.get("iid") if path.endswith("/callback") else None
        fault = self.sb.faults.pick(f"{method} {path}", callback_of=callback_of)
        if fault is not None:
            return self._record(method, path, fault, body, files, at, request, self._fault_response(fault))
        try:
            result = await rt.handler(self, Call(request, params, body, files, at))
        except ApiError as err:
            return self._record(method, path, err.status, body, files, at, request,
                                json_response(err.body, err.status))
        if isinstance(result, web.Response):
            resp = result
        elif result is None:
            resp = web.Response(status=204)
        else:
            resp = json_response(result)
        return self._record(method, path, resp.status, body, files, at, request, resp)

    def _fault_response(self, status: int) -> web.Response:
        if status == 429:
            retry = self.sb.faults.retry_after
            # discord.py only retries a 429 that has a Via header and a JSON retry_after.
            return json_response(
                {"message": "You are being rate limited.", "retry_after": retry, "global": False},
                429,
                {"Via": "1.1 google", "Retry-After": str(max(1, round(retry))),
                 "X-RateLimit-Scope": "user"},
            )
        return json_response({"message": f"{status}: sandbox fault", "code": 0}, status)

    def _record(self, method: str, path: str, status: int, body: Any, files: Files, at: float,
                request: web.Request, resp: web.Response) -> web.Response:
        self.sb.calls.append(RecordedCall(
            method=method, path=path, status=status, json=body,
            files=[files[k] if self.sb.keep_uploads else (files[k][0], b"") for k in sorted(files)],
            at=at, query=dict(request.query)))
        return resp

    # -- shared helpers -------------------------------------------------------------------

    def build_message(self, call: Call, *, channel_id: int, author_id: int,
                      interaction: Interaction | None = None, webhook: bool = False) -> Message:
        body = call.json or {}
        validate_message(body, call.files)
        self._check_upload_size(call.files, channel_id)
        channel = self.sb.channel_by_id(channel_id)
        msg = Message(
            id=self.sb.snowflakes.next(),
            channel_id=channel_id,
            guild_id=channel.guild_id if channel else None,
            author_id=author_id,
            content=str(body.get("content") or ""),
            embeds=list(body.get("embeds") or []),
            components=list(body.get("components") or []),
            flags=int(body.get("flags") or 0),
        )
        if webhook:
            msg.webhook_id = self.sb.application_id
            msg.application_id = self.sb.application_id
        if not webhook:
            msg.flags &= ~FLAG_EPHEMERAL  # channel messages can't be ephemeral
        if interaction is not None:
            msg.interaction_id = interaction.id
            msg.interaction_meta = {
                "id": str(interaction.id), "type": interaction.type, "user": interaction.user.payload(),
                "authorizing_integration_owners": interaction.channel.integration_owners(),
            }
            if msg.ephemeral:
                msg.visible_to = interaction.user.id
        msg.attachments = self._new_attachments(body, call.files, channel_id)
        msg.reference_id = self._reference(body.get("message_reference"), channel_id)
        if not (msg.content or msg.embeds or msg.attachments or msg.components or msg.flags & FLAG_LOADING):
            raise ApiError(400, 50006, "Cannot send an empty message")
        return msg

    def _reference(self, ref: Any, channel_id: int) -> int | None:
        if not isinstance(ref, dict) or ref.get("message_id") is None:
            return None
        target = self.sb.message(int(ref["message_id"]))
        if target is None or target.deleted or target.ephemeral:
            # Discord refuses a reply to a missing message unless told not to fail.
            if ref.get("fail_if_not_exists", True):
                raise ApiError(400, 50035, "Invalid Form Body", {"message_reference": {"_errors": [
                    {"code": "MESSAGE_REFERENCE_UNKNOWN_MESSAGE", "message": "Unknown message"}]}})
            return None
        return target.id

    def _new_attachments(self, body: dict[str, Any], files: Files, channel_id: int) -> list[Any]:
        described = {}
        for a in body.get("attachments") or []:
            try:
                described[int(a["id"])] = a
            except (KeyError, TypeError, ValueError):
                continue
        out = []
        for idx in sorted(files):
            filename, data = files[idx]
            name = described.get(idx, {}).get("filename") or filename
            out.append(self.sb.store_attachment(channel_id, name, data))
        return out

    def _check_upload_size(self, files: Files, channel_id: int) -> None:
        channel = self.sb.channel_by_id(channel_id)
        guild = self.sb.guilds.get(channel.guild_id) if channel is not None and channel.guild_id else None
        limit = guild.upload_limit if guild is not None else 10 * 1024 * 1024
        if any(len(data) > limit for _, data in files.values()):
            # What Discord answers when a file is over the server's upload limit; nothing changes.
            raise ApiError(413, 40005, "Request entity too large")

    async def edit_message(self, msg: Message, call: Call) -> Message:
        body = call.json or {}
        validate_message(body, call.files, editing=True)
        self._check_upload_size(call.files, msg.channel_id)  # before any change: a refused edit edits nothing
        before = msg.snapshot()
        if "content" in body:
            msg.content = str(body["content"] or "")
        if "embeds" in body:
            msg.embeds = list(body["embeds"] or [])
        if "components" in body:
            msg.components = list(body["components"] or [])
        if "flags" in body and body["flags"] is not None:
            # Only SUPPRESS_EMBEDS (4) and IS_COMPONENTS_V2 (1 << 15) may change on edit.
            changeable = 4 | (1 << 15)
            msg.flags = (msg.flags & ~changeable) | (int(body["flags"]) & changeable)
        msg.flags &= ~FLAG_LOADING
        if "attachments" in body:
            # API v10: the list names every attachment the message keeps, old (by id) and new (by index).
            existing = {a.id: a for a in msg.attachments}
            kept = []
            listed_new = set()
            for a in body["attachments"] or []:
                aid = int(a["id"])
                if aid in existing:
                    kept.append(existing[aid])
                elif aid in call.files:
                    listed_new.add(aid)
            new_files = {i: f for i, f in call.files.items() if i in listed_new}
            msg.attachments = kept + self._new_attachments(body, new_files, msg.channel_id)
        elif call.files:
            msg.attachments = msg.attachments + self._new_attachments(body, call.files, msg.channel_id)
        if len(msg.attachments) > 10:
            raise invalid_form("attachments", "Must be 10 or fewer in length.")
        await self.sb.message_edited(msg, before)
        return msg

    def channel_message(self, call: Call) -> Message:
        channel_id = int(call.params["cid"])
        msg = self.sb.message(int(call.params["mid"]))
        if msg is None or msg.deleted or msg.channel_id != channel_id or msg.ephemeral:
            raise unknown_message()
        return msg

    def interaction_for(self, call: Call) -> Interaction:
        if int(call.params["app"]) != self.sb.application_id:
            raise unknown_webhook()
        inter = self.sb.interaction_by_token(call.params["token"])
        if inter is None or self.sb.token_expired(inter):
            raise unknown_webhook()
        return inter

    def webhook_message(self, inter: Interaction, mid: str) -> Message:
        if mid == "@original":
            msg = inter.original
        else:
            msg = self.sb.message(int(mid))
            if msg is not None and msg.interaction_id != inter.id and msg is not inter.original:
                msg = None
        if msg is None or msg.deleted:
            raise unknown_message()
        return msg


def validate_message(body: dict[str, Any], files: Files, editing: bool = False) -> None:  # noqa: C901 -- mirrors Discord's checks one by one
    """Discord's limits that a bot most often trips over (400 Invalid Form Body)."""
    content = body.get("content")
    if content is not None and len(str(content)) > 2000:
        raise invalid_form("content", "Must be 2000 or fewer in length.")
    if len(body.get("embeds") or []) > 10:
        raise invalid_form("embeds", "Must be 10 or fewer in length.")
    if len(files) > 10:
        raise invalid_form("files", "Must be 10 or fewer in length.")
    rows = body.get("components") or []
    flags = int(body.get("flags") or 0)
    components_v2 = bool(flags & (1 << 15))
    if not components_v2 and len(rows) > 5:
        raise invalid_form("components", "Must be 5 or fewer in length.")
    seen: set[str] = set()

    def walk(items: list[dict[str, Any]], where: str) -> None:
        for i, item in enumerate(items):
            if item.get("type") == 1 and len(item.get("components") or []) > 5:
                raise invalid_form(f"{where}.{i}.components", "Must be 5 or fewer in length.")
            cid = item.get("custom_id")
            if cid is not None:
                if len(cid) > 100:
                    raise invalid_form(f"{where}.{i}.custom_id", "Must be 100 or fewer in length.")
                if cid in seen:
                    raise invalid_form(f"{where}.{i}.custom_id", "Component custom id cannot be duplicated")
                seen.add(cid)
            if item.get("type") == 2 and cid is None and not item.get("url") and not item.get("sku_id"):
                raise invalid_form(f"{where}.{i}", "A custom id or url is required")
            if "components" in item:
                walk(item["components"], f"{where}.{i}.components")

    walk(rows, "components")
    if components_v2:
        # Components V2: every component counts, nested ones and accessories too, and the layout is the
        # whole message (no content or embeds beside it).
        if body.get("content") or body.get("embeds"):
            raise invalid_form("content", "Cannot send content or embeds with the IS_COMPONENTS_V2 flag")
        if _count_components(rows) > 40:
            raise invalid_form("components", "Must be 40 or fewer in total.")


def _count_components(items: list[dict[str, Any]]) -> int:
    return sum(1 + _count_components(item.get("components") or [])
               + (1 if item.get("accessory") else 0) for item in items)


def validate_modal(data: dict[str, Any]) -> None:
    if not data.get("custom_id") or len(data["custom_id"]) > 100:
        raise invalid_form("data.custom_id", "Must be between 1 and 100 in length.")
    if not data.get("title") or len(data["title"]) > 45:
        raise invalid_form("data.title", "Must be between 1 and 45 in length.")
    components = data.get("components") or []
    if not 1 <= len(components) <= 5:
        raise invalid_form("data.components", "Must be between 1 and 5 in length.")


# -- users, application, gateway ---------------------------------------------------------------


@route("GET", "/users/@me", auth=False)
async def get_me(api: RestApi, call: Call) -> Any:
    # The bot, with its token; the member behind an OAuth2 Bearer token (sandbox/oauth.py).
    if call.request.headers.get("Authorization") != f"Bot {api.sb.bot_token}":
        grant = api.sb.oauth.bearer(call.request.headers.get("Authorization"))
        user = None if grant is None else api.sb.user_by_id(grant.user_id)
        if user is None:
            raise ApiError(401, 0, "401: Unauthorized")
        return user.payload() | {"locale": "en-US", "mfa_enabled": False}
    return api.sb.bot_user.payload() | {"verified": True, "mfa_enabled": False, "locale": "en-US",
                                        "email": None}


@route("GET", "/users/{uid}")
async def get_user(api: RestApi, call: Call) -> Any:
    user = api.sb.user_by_id(int(call.params["uid"]))
    if user is None:
        raise ApiError(404, 10013, "Unknown User")
    return user.payload()


@route("GET", "/oauth2/applications/@me")
async def get_application(api: RestApi, call: Call) -> Any:
    return application_payload(api.sb)


@route("GET", "/applications/@me")
async def get_application_me(api: RestApi, call: Call) -> Any:
    return application_payload(api.sb)


def application_payload(sb: Sandbox) -> dict[str, Any]:
    owner = sb.users.get("owner") or sb.bot_user
    return {
        "id": str(sb.application_id), "name": sb.bot_user.name, "icon": None, "description": "",
        "rpc_origins": [], "bot_public": True, "bot_require_code_grant": False,
        "bot": sb.bot_user.payload(), "owner": owner.payload(), "summary": "", "verify_key": "0" * 64,
        "team": None, "flags": 0, "tags": [], "approximate_guild_count": len(sb.bot_guilds()),
        "redirect_uris": [], "interactions_endpoint_url": None,
    }


@route("GET", "/gateway")
async def get_gateway(api: RestApi, call: Call) -> Any:
    return {"url": api.sb.gateway_url.rstrip("/")}


@route("GET", "/gateway/bot")
async def get_gateway_bot(api: RestApi, call: Call) -> Any:
    return {"url": api.sb.gateway_url.rstrip("/"), "shards": 1,
            "session_start_limit": {"total": 1000, "remaining": 999, "reset_after": 0, "max_concurrency": 1}}


# -- application commands ------------------------------------------------------------------------


def _store_commands(api: RestApi, app: str, body: Any, guild_id: int | None) -> list[dict[str, Any]]:
    if int(app) != api.sb.application_id:
        raise ApiError(403, 50001, "Missing Access")
    if not isinstance(body, list):
        raise invalid_form("_root", "Expected an array")
    previous = api.sb.guild_commands.get(guild_id, []) if guild_id else api.sb.global_commands
    old_ids = {(c["name"], c.get("type", 1)): c["id"] for c in previous}
    out = []
    for cmd in body:
        key = (cmd["name"], cmd.get("type", 1))
        stored = dict(cmd)
        stored.setdefault("type", 1)
        stored.setdefault("description", "")
        stored.setdefault("options", [])
        stored["id"] = old_ids.get(key) or str(api.sb.snowflakes.next())
        stored["application_id"] = str(api.sb.application_id)
        stored["version"] = str(api.sb.snowflakes.next())
        stored.setdefault("default_member_permissions", None)
        stored.setdefault("nsfw", False)
        if guild_id:
            stored["guild_id"] = str(guild_id)
        out.append(stored)
    if guild_id:
        api.sb.guild_commands[guild_id] = out
    else:
        api.sb.global_commands = out
    return out


@route("GET", "/applications/{app}/commands")
async def get_global_commands(api: RestApi, call: Call) -> Any:
    return api.sb.global_commands


@route("PUT", "/applications/{app}/commands")
async def put_global_commands(api: RestApi, call: Call) -> Any:
    return _store_commands(api, call.params["app"], call.json, None)


@route("GET", "/applications/{app}/guilds/{gid}/commands")
async def get_guild_commands(api: RestApi, call: Call) -> Any:
    return api.sb.guild_commands.get(int(call.params["gid"]), [])


@route("PUT", "/applications/{app}/guilds/{gid}/commands")
async def put_guild_commands(api: RestApi, call: Call) -> Any:
    gid = int(call.params["gid"])
    if gid not in api.sb.guilds:
        raise ApiError(404, 10004, "Unknown Guild")
    return _store_commands(api, call.params["app"], call.json, gid)


# -- interaction callback ----------------------------------------------------------------------


@route("POST", "/interactions/{iid}/{token}/callback", auth=False)
async def interaction_callback(api: RestApi, call: Call) -> Any:  # noqa: C901 -- one branch per callback type, as Discord's
    sb = api.sb
    inter = sb.interaction_by_token(call.params["token"])
    if inter is None or str(inter.id) != call.params["iid"] or sb.token_expired(inter):
        raise ApiError(404, 10062, "Unknown interaction")
    inter.callback_attempts += 1
    if inter.response_type is not None:
        raise ApiError(400, 40060, "Interaction has already been acknowledged.")
    if sb.ack_deadline is not None and call.at - inter.sent_at > sb.ack_deadline:
        raise ApiError(404, 10062, "Unknown interaction")
    body = call.json or {}
    ctype = int(body.get("type", 0))
    data = body.get("data") or {}
    sub = Call(call.request, call.params, data, call.files, call.at)
    message: Message | None = None
    if ctype == CHANNEL_MESSAGE:
        message = api.build_message(sub, channel_id=inter.channel.id, author_id=sb.bot_user.id,
                                    interaction=inter, webhook=True)
        inter.original = await sb.create_message(message)
    elif ctype == DEFERRED_CHANNEL_MESSAGE:
        flags = FLAG_LOADING | (int(data.get("flags") or 0) & FLAG_EPHEMERAL)
        loading = Call(call.request, call.params, {"flags": flags}, {})
        message = api.build_message(loading, channel_id=inter.channel.id, author_id=sb.bot_user.id,
                                    interaction=inter, webhook=True)
        inter.original = await sb.create_message(message)
    elif ctype in (DEFERRED_UPDATE_MESSAGE, UPDATE_MESSAGE):
        if inter.type != MESSAGE_COMPONENT and inter.message is None:
            raise ApiError(400, 40043, "Interaction is not a component or modal submit on a message")
        target = inter.message
        if target is None or target.deleted:
            raise unknown_message()
        inter.original = target
        if ctype == UPDATE_MESSAGE:
            message = await api.edit_message(target, sub)
    elif ctype == AUTOCOMPLETE_RESULT:
        choices = list(data.get("choices") or [])
        if len(choices) > 25:
            raise invalid_form("data.choices", "Must be 25 or fewer in length.")
        if any(not 1 <= len(str(c.get("name", ""))) <= 100 for c in choices):
            raise invalid_form("data.choices", "Choice names must be 1-100 characters long.")
        inter.choices = choices
    elif ctype == MODAL:
        validate_modal(data)
        inter.modal = data
    else:
        raise invalid_form("type", f"Unsupported callback type {ctype}")
    inter.mark_acked(ctype, call.at)
    response: dict[str, Any] = {
        "interaction": {
            "id": str(inter.id),
            "type": inter.type,
            "activity_instance_id": None,
            "response_message_id": str(inter.original.id) if inter.original else None,
            "response_message_loading": ctype == DEFERRED_CHANNEL_MESSAGE,
            "response_message_ephemeral": bool(inter.original and inter.original.ephemeral),
        },
        "resource": {"type": ctype},
    }
    if message is not None:
        response["resource"]["message"] = sb.message_payload(message)
    return response


# -- webhook followups and @original ------------------------------------------------------------


@route("POST", "/webhooks/{app}/{token}", auth=False)
async def followup_send(api: RestApi, call: Call) -> Any:
    sb = api.sb
    inter = api.interaction_for(call)
    if inter.response_type is None:
        raise ApiError(404, 10015, "Unknown Webhook")
    original = inter.original
    if (inter.response_type == DEFERRED_CHANNEL_MESSAGE and original is not None
            and original.flags & FLAG_LOADING and not original.deleted):
        # The first followup after a "thinking" defer replaces the loading message.
        msg = await api.edit_message(original, call)
    else:
        msg = api.build_message(call, channel_id=inter.channel.id, author_id=sb.bot_user.id,
                                interaction=inter, webhook=True)
        await sb.create_message(msg)
    inter.followups.append(msg)
    if call.request.query.get("wait", "false").lower() in ("true", "1"):
        return sb.message_payload(msg)
    return None


@route("GET", "/webhooks/{app}/{token}/messages/{mid}", auth=False)
async def webhook_get(api: RestApi, call: Call) -> Any:
    inter = api.interaction_for(call)
    return api.sb.message_payload(api.webhook_message(inter, call.params["mid"]))


@route("PATCH", "/webhooks/{app}/{token}/messages/{mid}", auth=False)
async def webhook_patch(api: RestApi, call: Call) -> Any:
    inter = api.interaction_for(call)
    msg = api.webhook_message(inter, call.params["mid"])
    await api.edit_message(msg, call)
    return api.sb.message_payload(msg)


@route("DELETE", "/webhooks/{app}/{token}/messages/{mid}", auth=False)
async def webhook_delete(api: RestApi, call: Call) -> Any:
    inter = api.interaction_for(call)
    msg = api.webhook_message(inter, call.params["mid"])
    await api.sb.delete_message(msg)
    return None


# -- channels and messages ---------------------------------------------------------------------


def _channel(api: RestApi, call: Call) -> Any:
    channel = api.sb.channel_by_id(int(call.params["cid"]))
    if channel is None:
        raise ApiError(404, 10003, "Unknown Channel")
    return channel


@route("GET", "/channels/{cid}")
async def get_channel(api: RestApi, call: Call) -> Any:
    return _channel(api, call).payload()


@route("POST", "/channels/{cid}/messages")
async def post_channel_message(api: RestApi, call: Call) -> Any:
    channel = _channel(api, call)
    msg = api.build_message(call, channel_id=channel.id, author_id=api.sb.bot_user.id)
    await api.sb.create_message(msg)
    return api.sb.message_payload(msg)


@route("GET", "/channels/{cid}/messages")
async def list_channel_messages(api: RestApi, call: Call) -> Any:
    channel = _channel(api, call)
    q = call.request.query
    limit = max(1, min(100, int(q.get("limit", "50"))))
    msgs = [m for m in api.sb.messages(channel) if not m.ephemeral]
    if "before" in q:
        msgs = [m for m in msgs if m.id < int(q["before"])]
    if "after" in q:
        msgs = [m for m in msgs if m.id > int(q["after"])]
        msgs = msgs[:limit]
    # Discord lists newest first.
    msgs = list(reversed(msgs))[:limit]
    return [api.sb.message_payload(m) for m in msgs]


@route("GET", "/channels/{cid}/messages/{mid}")
async def get_channel_message(api: RestApi, call: Call) -> Any:
    return api.sb.message_payload(api.channel_message(call))


@route("PATCH", "/channels/{cid}/messages/{mid}")
async def patch_channel_message(api: RestApi, call: Call) -> Any:
    msg = api.channel_message(call)
    if msg.author_id != api.sb.bot_user.id:
        raise ApiError(403, 50005, "Cannot edit a message authored by another user")
    await api.edit_message(msg, call)
    return api.sb.message_payload(msg)


@route("DELETE", "/channels/{cid}/messages/{mid}")
async def delete_channel_message(api: RestApi, call: Call) -> Any:
    msg = api.channel_message(call)
    if msg.author_id != api.sb.bot_user.id:
        guild = api.sb.guilds.get(msg.guild_id or 0)
        if guild is None or not guild.permissions_of(api.sb.bot_user.id) & MANAGE_MESSAGES:
            raise ApiError(403, 50013, "Missing Permissions")
    await api.sb.delete_message(msg)
    return None


@route("POST", "/channels/{cid}/typing")
async def typing(api: RestApi, call: Call) -> Any:
    _channel(api, call)
    return None


# -- guilds and members --------------------------------------------------------------------------


def _guild(api: RestApi, call: Call) -> Any:
    guild = api.sb.guilds.get(int(call.params["gid"]))
    if guild is None:
        raise ApiError(404, 10004, "Unknown Guild")
    return guild


@route("GET", "/guilds/{gid}")
async def get_guild(api: RestApi, call: Call) -> Any:
    data = _guild(api, call).payload()
    for key in ("members", "channels", "threads", "presences", "voice_states", "joined_at", "large",
                "member_count", "stage_instances", "guild_scheduled_events", "soundboard_sounds"):
        data.pop(key, None)
    return data


@route("GET", "/guilds/{gid}/channels")
async def get_guild_channels(api: RestApi, call: Call) -> Any:
    return [c.payload() for c in _guild(api, call).channels.values()]


@route("GET", "/guilds/{gid}/roles")
async def get_guild_roles(api: RestApi, call: Call) -> Any:
    return [r.payload() for r in _guild(api, call).roles.values()]


@route("GET", "/guilds/{gid}/members")
async def list_members(api: RestApi, call: Call) -> Any:
    guild = _guild(api, call)
    limit = max(1, min(1000, int(call.request.query.get("limit", "1"))))
    after = int(call.request.query.get("after", "0"))
    members = sorted((m for m in guild.members.values() if m.user.id > after), key=lambda m: m.user.id)
    return [m.payload() for m in members[:limit]]


@route("GET", "/guilds/{gid}/members/{uid}")
async def get_member(api: RestApi, call: Call) -> Any:
    guild = _guild(api, call)
    member = guild.members.get(int(call.params["uid"]))
    if member is None:
        raise ApiError(404, 10007, "Unknown Member")
    return member.payload()


# -- app -----------------------------------------------------------------------------------------


def build_app(sandbox: Sandbox) -> web.Application:
    from sandbox import client, oauth  # oauth registers its API routes

    api = RestApi(sandbox)
    app = web.Application(client_max_size=64 * 1024 * 1024)
    app.router.add_get("/", sandbox.gateway.handle)
    app.router.add_route("*", "/api/v{version}/{tail:.*}", api.dispatch)

    async def cdn(request: web.Request) -> web.StreamResponse:
        att = sandbox.attachments.get(int(request.match_info["aid"]))
        if att is None or att.filename != request.match_info["filename"]:
            return web.Response(status=404, text="Not Found")
        return web.Response(body=att.data, headers={"Content-Type": att.content_type})

    app.router.add_get("/cdn/attachments/{cid}/{aid}/{filename}", cdn)
    oauth.add_routes(app, sandbox)
    client.add_routes(app)  # the demo's channel page in a browser
    return app
