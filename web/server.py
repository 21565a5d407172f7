"""The gallery's routes (aiohttp) and how `atelier run` starts them.

Every page and every file is checked against the visibility rule for the member asking, on each request
(storage/access.py): files are addressed by content hash and served only when some live image with those
bytes is visible to the member; anything else answers exactly as a missing thing would (404).
"""

from __future__ import annotations

import asyncio
import io
import logging
import re
import secrets
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import jinja2
from aiohttp import web
from PIL import Image, ImageFilter

from storage.access import Viewer, gallery_scope, member_can_see
from storage.blobs import BlobStore
from storage.db import Database
from storage.gallery import GalleryFilter
from storage.images import ImageRow
from web import discord_oauth
from web.config import WebConfig
from web.filters import BadFilter, parse
from web.limits import RateLimit
from web.session import Session, Sessions, csrf_ok, safe_return

log = logging.getLogger(__name__)

HERE = Path(__file__).parent
PER_PAGE = 30
BLOB_KEY = re.compile(r"^[0-9a-f]{64}\.png$")
IMMUTABLE = "private, max-age=31536000, immutable"  # private: each fetch is the member's own (access checked)
SECURITY_HEADERS = {
    # Only our own files run and load: no inline script, no CDN, no framing.
    "Content-Security-Policy": "default-src 'self'; img-src 'self' data:; script-src 'self'; "
                               "style-src 'self'; frame-ancestors 'none'; form-action 'self' {discord}; "
                               "base-uri 'none'",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "same-origin",
}

BotGuilds = Callable[[], "set[int] | None"]  # the guilds the bot is in now (None: not known yet)

CONFIG: web.AppKey[WebConfig] = web.AppKey("config", WebConfig)
DB: web.AppKey[Database] = web.AppKey("db", Database)
BLOBS: web.AppKey[BlobStore] = web.AppKey("blobs", BlobStore)
SESSIONS: web.AppKey[Sessions] = web.AppKey("sessions", Sessions)
TEMPLATES: web.AppKey[jinja2.Environment] = web.AppKey("templates", jinja2.Environment)
BOT_GUILDS: web.AppKey[BotGuilds] = web.AppKey("bot_guilds")
LIMITS: web.AppKey[dict[str, RateLimit]] = web.AppKey("limits", dict)


# -- helpers ---------------------------------------------------------------------------------------------


def current(request: web.Request) -> Session | None:
    """The member logged in, their guilds narrowed to those the bot is still in."""
    session: Session | None = request.app[SESSIONS].read(request)
    if session is None:
        return None
    in_bot = request.app[BOT_GUILDS]()
    if in_bot is not None:
        session = Session(session.user_id, session.name,
                          {g: n for g, n in session.guilds.items() if g in in_bot}, session.csrf)
    return session


def render(request: web.Request, name: str, status: int = 200, **context: Any) -> web.Response:
    template = request.app[TEMPLATES].get_template(name)
    html = template.render(session=current(request), path=request.path_qs, **context)
    return web.Response(text=html, status=status, content_type="text/html")


def problem(request: web.Request, message: str, status: int = 400) -> web.Response:
    return render(request, "problem.html", status=status, message=message)


def not_found(request: web.Request) -> web.Response:
    return problem(request, "Nothing here, or nothing you can see.", 404)


def need_login(request: web.Request) -> web.Response:
    raise web.HTTPFound(str(request.app.router["login"].url_for().with_query(next=request.path_qs)))


def limited(request: web.Request, bucket: str, key: str) -> bool:
    return not request.app[LIMITS][bucket].allow(key)


# -- middleware ------------------------------------------------------------------------------------------


@web.middleware
async def guard(request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
                ) -> web.StreamResponse:
    """CSRF on every state change (a token from the session, in the form or the X-CSRF-Token header, and
    a same-origin Origin when the browser sends one), then the security headers on every answer."""
    config = request.app[CONFIG]
    started = time.perf_counter()
    if request.method not in ("GET", "HEAD", "OPTIONS"):
        origin = request.headers.get("Origin")
        token = request.headers.get("X-CSRF-Token")
        if token is None and request.content_type == "application/x-www-form-urlencoded":
            token = str((await request.post()).get("csrf", ""))
        if (origin is not None and origin != config.origin) or not csrf_ok(current(request), token):
            response: web.StreamResponse = problem(
                request, "Refused: this form has expired. Reload the page and try again.", 403)
            return _secure(response, config)
    try:
        response = await handler(request)
    except web.HTTPException as exc:
        response = exc
        _secure(response, config)
        raise
    # What this request cost the server (browsers' dev tools show it; bench/web.py reads it).
    response.headers["Server-Timing"] = f"app;dur={(time.perf_counter() - started) * 1000:.2f}"
    return _secure(response, config)


def _secure(response: web.StreamResponse, config: WebConfig) -> web.StreamResponse:
    for key, value in SECURITY_HEADERS.items():
        response.headers.setdefault(key, value.replace("{discord}", str(config.discord_origin)))
    return response


# -- login -----------------------------------------------------------------------------------------------


async def index(request: web.Request) -> web.Response:
    if current(request) is not None:
        raise web.HTTPFound("/me")
    return render(request, "index.html", error=None)


async def login(request: web.Request) -> web.Response:
    if limited(request, "login", request.remote or "?"):
        return problem(request, "Too many logins from here; wait a minute.", 429)
    state = secrets.token_urlsafe(24)
    response = web.HTTPFound(discord_oauth.authorize_url(request.app[CONFIG], state))
    request.app[SESSIONS].begin_login(response, state, safe_return(request.query.get("next")))
    raise response


async def callback(request: web.Request) -> web.Response:
    if limited(request, "login", request.remote or "?"):
        return problem(request, "Too many logins from here; wait a minute.", 429)
    if "error" in request.query:  # the member said no on Discord's page
        return render(request, "index.html", status=400, error="Discord did not log you in.")
    sessions = request.app[SESSIONS]
    back = sessions.finish_login(request, request.query.get("state", ""))
    if back is None:
        return problem(request, "This login expired or was not started here. Log in again.")
    try:
        identity = await discord_oauth.identify(request.app[CONFIG], request.query.get("code", ""))
    except discord_oauth.OAuthFailed as exc:
        return problem(request, str(exc), 502)
    except (TimeoutError, OSError):
        return problem(request, "Discord could not be reached; try again.", 502)
    in_bot = request.app[BOT_GUILDS]()
    shared = {g: n for g, n in identity.guilds.items() if in_bot is None or g in in_bot}
    response = web.HTTPFound(back)
    sessions.start(response, identity.user_id, identity.name, shared)
    log.info("web login: user %s (%d shared guilds)", identity.user_id, len(shared))
    raise response


async def logout(request: web.Request) -> web.Response:
    response = web.HTTPSeeOther("/")
    request.app[SESSIONS].end(response)
    raise response


# -- the grid --------------------------------------------------------------------------------------------


async def _grid(request: web.Request, session: Session, owner_id: int) -> web.Response:
    try:
        query = parse(request.query, session.guilds, request.app[CONFIG])
    except BadFilter as exc:
        return problem(request, str(exc))
    scope = gallery_scope(Viewer(session.user_id, query.guild_id), owner_id)
    if scope is None:  # another member's DMs
        return not_found(request)
    if query.search and limited(request, "search", str(session.user_id)):
        return problem(request, "Too many searches; wait a minute.", 429)
    f = GalleryFilter(query.guild_id, owner_id, scope, favourites=query.favourites, search=query.search,
                      viewer_id=session.user_id, facets=query.facets)
    rows = await request.app[DB].gallery.page(f, limit=PER_PAGE, before=query.before)
    more = None
    if len(rows) == PER_PAGE:
        # A plain link to the older images (keyboards, no script); app.js fetches it as a fragment.
        kept = {k: v for k, v in request.query.items() if k not in ("fragment", "before")}
        more = request.rel_url.with_query({**kept, "before": str(rows[-1].id)})
    context: dict[str, Any] = {"rows": rows, "more": more, "query": query, "owner_id": owner_id}
    if request.query.get("fragment") == "1":
        return render(request, "tiles.html", **context)
    return render(request, "grid.html", config=request.app[CONFIG], guilds=session.guilds,
                  mine=owner_id == session.user_id, **context)


async def mine(request: web.Request) -> web.Response:
    session = current(request)
    if session is None:
        return need_login(request)
    return await _grid(request, session, session.user_id)


async def member(request: web.Request) -> web.Response:
    session = current(request)
    if session is None:
        return need_login(request)
    try:
        owner_id = int(request.match_info["user_id"])
    except ValueError:
        return not_found(request)
    if owner_id == session.user_id:
        raise web.HTTPFound(str(request.app.router["mine"].url_for().with_query(request.query)))
    if "guild" not in request.query:  # another member's images are always seen in one shared guild
        return problem(request, "Say which server: another member's images are shown server by server.")
    return await _grid(request, session, owner_id)


# -- one image -------------------------------------------------------------------------------------------


async def _visible_image(request: web.Request) -> tuple[Session, ImageRow] | web.Response:
    """The signed-in member and the image of the URL they may see; else the answer to give instead (the
    login page, or not found: an image they may not see reads as missing)."""
    session = current(request)
    if session is None:
        return need_login(request)
    try:
        image_id = int(request.match_info["image_id"])
    except ValueError:
        return not_found(request)
    image = await request.app[DB].images.get(image_id)
    if image is None or not member_can_see(image, session.member(), deleted=image.deleted):
        return not_found(request)
    return session, image


async def image_page(request: web.Request) -> web.Response:
    found = await _visible_image(request)
    if isinstance(found, web.Response):
        return found
    session, image = found
    db, member_ = request.app[DB], session.member()
    job = await db.jobs.get(image.job_id)
    assert job is not None  # images reference their job
    parent = None
    if job.parent_job_id is not None:
        parent = await db.images.get_by_index(job.parent_job_id, job.parent_index or 0)
        if parent is not None and not member_can_see(parent, member_, deleted=parent.deleted):
            parent = None
    children = [c for c in await db.images.children(job.id, image.index) if member_can_see(c, member_)]
    siblings = [s for s in await db.images.for_job(job.id) if s.id != image.id]
    starred = image.id in await db.images.starred(session.user_id, [image.id])
    config = request.app[CONFIG]
    return render(request, "image.html", image=image, job=job, request_=job.request, parent=parent,
                  children=children, siblings=siblings, starred=starred,
                  link=config.message_link(job.guild_id, job.channel_id, job.message_id),
                  guild_name=session.guilds.get(job.guild_id or 0, "Direct messages"))


async def star(request: web.Request) -> web.Response:
    found = await _visible_image(request)
    if isinstance(found, web.Response):
        return found
    session, image = found
    form = await request.post()
    await request.app[DB].images.toggle_favourite(session.user_id, [image.id], form.get("star") == "1")
    raise web.HTTPSeeOther(f"/image/{image.id}")


# -- files -----------------------------------------------------------------------------------------------


async def _visible_blob(request: web.Request) -> tuple[str, ImageRow] | None:
    session = current(request)
    key = request.match_info["key"]
    if session is None or not BLOB_KEY.match(key):  # the shape alone: no path ever reaches the disk
        return None
    member_ = session.member()
    for row in await request.app[DB].images.with_blob(key):
        if member_can_see(row, member_):
            return key, row
    return None


def _cached(request: web.Request, key: str) -> web.Response | None:
    etag = f'"{key.split(".")[0]}"'
    if request.headers.get("If-None-Match") == etag:
        return web.Response(status=304, headers={"ETag": etag, "Cache-Control": IMMUTABLE})
    return None


def _blur(jpeg: bytes) -> bytes:
    # As /gallery outside age-restricted channels: a flagged image is blurred beyond recognition (the web
    # has no age-restricted place to show it in).
    with Image.open(io.BytesIO(jpeg)) as im:
        blurred = im.convert("RGB").filter(ImageFilter.GaussianBlur(24))
    buf = io.BytesIO()
    blurred.save(buf, format="JPEG", quality=70)
    return buf.getvalue()


async def original(request: web.Request) -> web.Response:
    found = await _visible_blob(request)
    if found is None:
        return not_found(request)
    key, row = found
    session = current(request)
    if row.nsfw and (session is None or row.user_id != session.user_id):
        return not_found(request)  # flagged: its maker alone gets the file
    hit = _cached(request, key)
    if hit is not None:
        return hit
    try:
        data = await asyncio.to_thread(request.app[BLOBS].read, key)
    except KeyError:
        return not_found(request)
    headers = {"ETag": f'"{key.split(".")[0]}"', "Cache-Control": IMMUTABLE, "Content-Type": "image/png"}
    if request.query.get("download") == "1":
        headers["Content-Disposition"] = f'attachment; filename="atelier-{row.job_id}-{row.index + 1}.png"'
    return web.Response(body=data, headers=headers)


async def thumbnail(request: web.Request) -> web.Response:
    found = await _visible_blob(request)
    if found is None:
        return not_found(request)
    key, row = found
    hit = None if row.nsfw else _cached(request, key)
    if hit is not None:
        return hit
    try:
        data = await asyncio.to_thread(request.app[BLOBS].thumbnail, key, 320)
        if row.nsfw:
            data = await asyncio.to_thread(_blur, data)
    except (KeyError, OSError):
        return not_found(request)
    if row.nsfw:  # a moderator may clear the flag: not cached as if it could never change
        return web.Response(body=data, headers={"Cache-Control": "private, no-cache",
                                                "Content-Type": "image/jpeg"})
    return web.Response(body=data, headers={"ETag": f'"{key.split(".")[0]}"', "Cache-Control": IMMUTABLE,
                                            "Content-Type": "image/jpeg"})


# -- the app ---------------------------------------------------------------------------------------------


def build_app(config: WebConfig, db: Database, blobs: BlobStore, bot_guilds: BotGuilds | None = None
              ) -> web.Application:
    app = web.Application(middlewares=[guard], client_max_size=64 * 1024)
    app[CONFIG], app[DB], app[BLOBS] = config, db, blobs
    app[SESSIONS] = Sessions(config)
    app[BOT_GUILDS] = bot_guilds or (lambda: None)
    app[LIMITS] = {"login": RateLimit(*config.login_limit), "search": RateLimit(*config.search_limit)}
    app[TEMPLATES] = jinja2.Environment(loader=jinja2.FileSystemLoader(HERE / "templates"),
                                        autoescape=True, trim_blocks=True, lstrip_blocks=True)
    app[TEMPLATES].globals["url"] = lambda name, filename: str(
        app.router[name].url_for(filename=filename))  # with ?v=<hash>: the static route appends versions
    app.router.add_get("/", index, name="index")
    app.router.add_get("/login", login, name="login")
    app.router.add_get("/oauth/callback", callback, name="callback")
    app.router.add_post("/logout", logout, name="logout")
    app.router.add_get("/me", mine, name="mine")
    app.router.add_get("/u/{user_id}", member, name="member")
    app.router.add_get("/image/{image_id}", image_page, name="image")
    app.router.add_post("/image/{image_id}/star", star, name="star")
    app.router.add_get("/file/{key}", original, name="file")
    app.router.add_get("/thumb/{key}", thumbnail, name="thumb")
    app.router.add_static("/static/", HERE / "static", name="static", append_version=True)
    return app


async def start_web(config: WebConfig, db: Database, blobs: BlobStore, addr: str,
                    bot_guilds: BotGuilds | None = None) -> web.AppRunner:
    """Serve on `addr` (host:port); the caller cleans the runner up."""
    host, _, port = addr.rpartition(":")
    # No access log: the OAuth2 callback's query string holds the login code.
    runner = web.AppRunner(build_app(config, db, blobs, bot_guilds), access_log=None)
    await runner.setup()
    try:
        await web.TCPSite(runner, host or "127.0.0.1", int(port)).start()
    except BaseException:
        await runner.cleanup()
        raise
    log.info("web gallery on http://%s (public address %s)", addr, config.public_url)
    return runner
