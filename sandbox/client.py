"""A Discord-like channel page in the browser, for the demo: a person picks a sandbox member, types
/imagine with its options, watches the reply turn into a progress message and a result, and clicks its
buttons. The page calls the sandbox's user API (Sandbox.slash / Sandbox.click), so the real bot, through
the real discord.py, does all the work, exactly as in the tests.

- GET  /client                      -> the first channel of the first guild, as alice
- GET  /client/{channel_id}?as=NAME  the page (static/client.js polls and renders)
- GET  /client/{channel_id}/messages?as=NAME   what that member sees there (ephemeral replies included)
- POST /client/{channel_id}/imagine  JSON {as, prompt, negative?, aspect?, seed?, steps?, count?}
- POST /client/{channel_id}/click    JSON {as, message_id, custom_id}; answers with the modal the bot opened,
                                     if it opened one (🖋 Remix and the like)
- POST /client/{channel_id}/modal    JSON {as, custom_id, message_id?, fields: {input id: value}}
State changes take JSON only: a cross-site form cannot send it (CORS preflight), so no other page can
drive a member's clicks.
"""

from __future__ import annotations

import html
from pathlib import Path
from typing import TYPE_CHECKING, Any

from aiohttp import web

from sandbox.oauth import SANDBOX

if TYPE_CHECKING:
    from sandbox.server import Sandbox
    from sandbox.world import Channel, Message, User

STATIC = Path(__file__).parent / "static"
MODAL = 9  # the interaction callback that opens a modal
IMAGINE_OPTIONS = {"negative": str, "aspect": str, "seed": int, "steps": int, "count": int}

_PAGE = """<!doctype html><html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1"><meta name="color-scheme" content="dark">
<title>#{channel} - sandbox Discord</title><link rel="stylesheet" href="/client-static/client.css">
<script src="/client-static/client.js" defer></script></head>
<body data-channel="{channel_id}" data-as="{user}">
<header><strong>Sandbox Discord</strong> <span>#{channel}</span>
<label>You are <select id="as">{users}</select></label></header>
<main id="messages" aria-live="polite" aria-label="Messages in #{channel}"></main>
<form id="imagine" aria-label="/imagine">
  <label class="prompt">/imagine prompt <input id="prompt" name="prompt" required maxlength="1500"
    placeholder="a lighthouse at dusk --ar 3:2"></label>
  <details><summary>Options</summary>
    <label>negative <input name="negative"></label>
    <label>aspect <select name="aspect"><option value="">-</option>{aspects}</select></label>
    <label>seed <input name="seed" inputmode="numeric" pattern="[0-9]*"></label>
    <label>steps <input name="steps" inputmode="numeric" pattern="[0-9]*"></label>
    <label>count <select name="count"><option value="">-</option>{counts}</select></label>
  </details>
  <button type="submit" id="send">Send</button>
</form></body></html>"""


def _member(sb: Sandbox, name: str | None) -> User:
    user = sb.users.get(name or "alice")
    if user is None or user.bot:
        raise web.HTTPBadRequest(text="Unknown member")
    return user


def _channel(sb: Sandbox, request: web.Request) -> Channel:
    try:
        channel = sb.channel_by_id(int(request.match_info["channel_id"]))
    except ValueError:
        channel = None
    if channel is None:
        raise web.HTTPNotFound(text="Unknown channel")
    return channel


def _shown(sb: Sandbox, m: Message) -> dict[str, Any]:
    author = sb.user_by_id(m.author_id)
    return {
        "id": str(m.id), "author": author.name if author else "?", "content": m.content,
        "embeds": [{"title": e.get("title", ""), "description": e.get("description", ""),
                    "image": (e.get("image") or {}).get("url")} for e in m.embeds],
        "attachments": [{"url": a.url, "filename": a.filename, "image": a.content_type.startswith("image/")}
                        for a in m.attachments],
        "buttons": [b for b in m.buttons() if b.get("custom_id")],
        "ephemeral": m.ephemeral, "edits": m.edits,
    }


async def page(request: web.Request) -> web.Response:
    sb = request.app[SANDBOX]
    channel = _channel(sb, request)
    user = _member(sb, request.query.get("as"))
    users = "".join(f'<option {"selected" if u.id == user.id else ""}>{html.escape(u.name)}</option>'
                    for u in sb.users.values() if not u.bot)
    aspects = "".join(f"<option>{a}</option>" for a in ("1:1", "3:2", "2:3", "4:3", "3:4", "16:9", "9:16"))
    counts = "".join(f"<option>{n}</option>" for n in range(1, 5))
    return web.Response(text=_PAGE.format(channel=html.escape(channel.name), channel_id=channel.id,
                                          user=html.escape(user.name), users=users, aspects=aspects,
                                          counts=counts), content_type="text/html")


async def first_channel(request: web.Request) -> web.Response:
    sb = request.app[SANDBOX]
    raise web.HTTPFound(f"/client/{sb.channel('general').id}?as=alice")


async def messages(request: web.Request) -> web.Response:
    sb = request.app[SANDBOX]
    channel = _channel(sb, request)
    user = _member(sb, request.query.get("as"))
    return web.json_response([_shown(sb, m) for m in sb.messages(channel, viewer=user)])


async def _json(request: web.Request) -> dict[str, Any]:
    if request.content_type != "application/json":
        raise web.HTTPUnsupportedMediaType(text="JSON only")
    body = await request.json()
    if not isinstance(body, dict):
        raise web.HTTPBadRequest(text="A JSON object, please")
    return body


async def imagine(request: web.Request) -> web.Response:
    sb = request.app[SANDBOX]
    channel = _channel(sb, request)
    body = await _json(request)
    user = _member(sb, body.get("as"))
    prompt = str(body.get("prompt", "")).strip()
    if not prompt:
        raise web.HTTPBadRequest(text="Type a prompt")
    options: dict[str, Any] = {"prompt": prompt}
    for name, kind in IMAGINE_OPTIONS.items():
        value = body.get(name)
        if value not in (None, ""):
            try:
                options[name] = kind(value)
            except ValueError:
                raise web.HTTPBadRequest(text=f"{name} must be a number") from None
    interaction = await sb.slash(user, channel, "imagine", options)
    return web.json_response({"interaction": str(interaction.id)})


async def click(request: web.Request) -> web.Response:
    sb = request.app[SANDBOX]
    body = await _json(request)
    user = _member(sb, body.get("as"))
    try:
        message = sb.message(int(body.get("message_id", 0)))
    except (TypeError, ValueError):
        message = None
    if message is None or message.deleted or (message.ephemeral and message.visible_to != user.id):
        raise web.HTTPNotFound(text="Unknown message")
    from sandbox.server import SandboxError

    try:
        interaction = await sb.click(user, message, str(body.get("custom_id", "")))
    except SandboxError as exc:
        raise web.HTTPBadRequest(text=str(exc)) from None
    answer: dict[str, Any] = {"interaction": str(interaction.id)}
    try:
        kind = await interaction.wait_ack(timeout=5)
    except TimeoutError:  # the bot is slow: the page shows what happens as it polls
        return web.json_response(answer)
    if kind == MODAL and interaction.modal is not None:
        opened = interaction.modal
        answer["modal"] = {"custom_id": opened.get("custom_id"), "title": opened.get("title", ""),
                           "message_id": str(message.id), "inputs": _inputs(opened.get("components", []))}
    return web.json_response(answer)


def _inputs(items: list[dict[str, Any]], label: str = "") -> list[dict[str, Any]]:
    """A modal's text inputs with their labels (on the input in action rows, on the wrapper in a label)."""
    found: list[dict[str, Any]] = []
    for item in items:
        if item.get("type") == 4:
            found.append({"custom_id": item.get("custom_id"), "label": item.get("label") or label,
                          "value": item.get("value") or "", "required": item.get("required", True),
                          "paragraph": item.get("style") == 2})
        found += _inputs(item.get("components", []), label)
        if isinstance(item.get("component"), dict):
            found += _inputs([item["component"]], str(item.get("label", "")))
    return found


async def modal(request: web.Request) -> web.Response:
    sb = request.app[SANDBOX]
    channel = _channel(sb, request)
    body = await _json(request)
    user = _member(sb, body.get("as"))
    fields = body.get("fields")
    if not isinstance(fields, dict):
        raise web.HTTPBadRequest(text="fields: an object of input id -> text")
    message = None
    if body.get("message_id"):
        try:
            message = sb.message(int(body["message_id"]))
        except (TypeError, ValueError):
            message = None
    from sandbox.server import SandboxError

    try:
        interaction = await sb.submit_modal(user, channel, str(body.get("custom_id", "")),
                                            {str(k): str(v) for k, v in fields.items()}, message=message)
    except SandboxError as exc:
        raise web.HTTPBadRequest(text=str(exc)) from None
    return web.json_response({"interaction": str(interaction.id)})


def add_routes(app: web.Application) -> None:
    app.router.add_get("/client", first_channel)
    app.router.add_get("/client/{channel_id}", page)
    app.router.add_get("/client/{channel_id}/messages", messages)
    app.router.add_post("/client/{channel_id}/imagine", imagine)
    app.router.add_post("/client/{channel_id}/click", click)
    app.router.add_post("/client/{channel_id}/modal", modal)
    app.router.add_static("/client-static/", STATIC)
