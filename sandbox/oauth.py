"""Discord's OAuth2 authorization-code flow, as the web gallery uses it (scopes `identify guilds`).

- GET  /oauth2/authorize (at the origin, as discord.com/oauth2/authorize): a page to pick the sandbox member
  who logs in, in place of Discord's consent screen; POST back with the pick redirects to `redirect_uri`
  with `code` and `state`.
- POST /api/v10/oauth2/token (form-encoded; client id and secret by HTTP Basic or in the form): the code,
  once, for a Bearer token.
- GET  /api/v10/users/@me and /users/@me/guilds with `Authorization: Bearer <token>`.
Codes live 10 minutes and are single-use; the redirect_uri of the exchange must equal the authorize one.
"""

from __future__ import annotations

import base64
import html
import secrets
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from aiohttp import web
from yarl import URL

from sandbox.rest import ApiError, Call, RestApi, route

if TYPE_CHECKING:
    from sandbox.server import Sandbox

CODE_TTL = 600.0
SANDBOX: web.AppKey[Sandbox] = web.AppKey("sandbox")
TOKEN_TTL = 604800


@dataclass
class Grant:
    user_id: int
    client_id: str
    redirect_uri: str
    scopes: frozenset[str]
    expires_at: float


@dataclass
class OAuthState:
    """What the sandbox keeps of OAuth2: the application's secret, codes handed out, tokens issued."""

    client_secret: str = "sandbox-oauth-secret"

    def __post_init__(self) -> None:
        self.codes: dict[str, Grant] = {}
        self.tokens: dict[str, Grant] = {}

    def grant(self, user_id: int, client_id: str, redirect_uri: str, scopes: frozenset[str]) -> str:
        code = secrets.token_urlsafe(24)
        self.codes[code] = Grant(user_id, client_id, redirect_uri, scopes, time.time() + CODE_TTL)
        return code

    def bearer(self, authorization: str | None) -> Grant | None:
        if not authorization or not authorization.startswith("Bearer "):
            return None
        grant = self.tokens.get(authorization.removeprefix("Bearer "))
        return grant if grant is not None and grant.expires_at > time.time() else None


def _oauth_error(error: str, description: str, status: int = 400) -> ApiError:
    err = ApiError(status, 0, description)
    err.body = {"error": error, "error_description": description}
    return err


def _client_credentials(call: Call, form: dict[str, Any]) -> tuple[str, str]:
    header = call.request.headers.get("Authorization", "")
    if header.startswith("Basic "):
        try:
            raw = base64.b64decode(header.removeprefix("Basic ")).decode()
        except (ValueError, UnicodeDecodeError):
            raise _oauth_error("invalid_client", "Malformed client credentials", 401) from None
        client_id, _, secret = raw.partition(":")
        return client_id, secret
    return str(form.get("client_id", "")), str(form.get("client_secret", ""))


@route("POST", "/oauth2/token", auth=False)
async def token(api: RestApi, call: Call) -> Any:
    sb = api.sb
    form = call.json if isinstance(call.json, dict) else {}
    client_id, secret = _client_credentials(call, form)
    if client_id != str(sb.application_id) or not secrets.compare_digest(secret, sb.oauth.client_secret):
        raise _oauth_error("invalid_client", "Invalid client credentials", 401)
    if form.get("grant_type") != "authorization_code":
        raise _oauth_error("unsupported_grant_type", "Unsupported grant type")
    grant = sb.oauth.codes.pop(str(form.get("code", "")), None)  # single use, whatever happens next
    if grant is None or grant.expires_at < time.time() or grant.client_id != client_id:
        raise _oauth_error("invalid_grant", 'Invalid "code" in request.')
    if form.get("redirect_uri") != grant.redirect_uri:
        raise _oauth_error("invalid_grant", 'Invalid "redirect_uri" in request.')
    access = secrets.token_urlsafe(30)
    sb.oauth.tokens[access] = Grant(grant.user_id, client_id, grant.redirect_uri, grant.scopes,
                                    time.time() + TOKEN_TTL)
    return {"access_token": access, "token_type": "Bearer", "expires_in": TOKEN_TTL,
            "refresh_token": secrets.token_urlsafe(30), "scope": " ".join(sorted(grant.scopes))}


def bearer_user(api: RestApi, call: Call, scope: str) -> int:
    grant = api.sb.oauth.bearer(call.request.headers.get("Authorization"))
    if grant is None:
        raise ApiError(401, 0, "401: Unauthorized")
    if scope not in grant.scopes:
        raise ApiError(403, 50001, "Missing Access")
    return grant.user_id


@route("GET", "/users/@me/guilds", auth=False)
async def my_guilds(api: RestApi, call: Call) -> Any:
    user_id = bearer_user(api, call, "guilds")
    return [
        {"id": str(g.id), "name": g.name, "icon": None, "banner": None, "owner": g.owner_id == user_id,
         "permissions": str(g.permissions_of(user_id)), "features": []}
        for g in api.sb.guilds.values() if user_id in g.members
    ]


_PAGE = """<!doctype html><html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1"><title>Sandbox - authorize</title></head>
<body style="font-family: sans-serif; background: #1e1f22; color: #eee">
<h1>Sandbox Discord</h1><p>An application wants to know who you are and which servers you are in
(<code>{scopes}</code>). Log in as:</p>
<form method="post" action="/oauth2/authorize">{hidden}{buttons}</form></body></html>"""


async def authorize_page(request: web.Request) -> web.Response:
    sb = request.app[SANDBOX]
    q = request.query
    problem = _check_authorize(sb, q)
    if problem:
        return web.Response(status=400, text=problem)
    hidden = "".join(f'<input type="hidden" name="{k}" value="{html.escape(q.get(k, ""))}">'
                     for k in ("client_id", "redirect_uri", "response_type", "scope", "state"))
    buttons = "".join(f'<p><button type="submit" name="user" value="{u.id}" id="as-{html.escape(u.name)}">'
                      f"{html.escape(u.name)}</button></p>"
                      for u in sb.users.values() if not u.bot)
    return web.Response(text=_PAGE.format(scopes=html.escape(q.get("scope", "")), hidden=hidden,
                                          buttons=buttons), content_type="text/html")


def _check_authorize(sb: Sandbox, q: Any) -> str | None:
    if q.get("client_id") != str(sb.application_id):
        return "Unknown application"
    if q.get("response_type") != "code":
        return "Unsupported response_type"
    redirect = URL(q.get("redirect_uri", ""))
    if not redirect.is_absolute() or redirect.scheme not in ("http", "https"):
        return "Invalid redirect_uri"
    if "identify" not in q.get("scope", "").split():
        return "The identify scope is required"
    return None


async def authorize_submit(request: web.Request) -> web.Response:
    sb = request.app[SANDBOX]
    form = await request.post()
    problem = _check_authorize(sb, form)
    if problem:
        return web.Response(status=400, text=problem)
    try:
        user = sb.user_by_id(int(str(form.get("user", ""))))
    except ValueError:
        user = None
    if user is None or user.bot:
        return web.Response(status=400, text="Unknown user")
    redirect_uri = str(form["redirect_uri"])
    code = sb.oauth.grant(user.id, str(form["client_id"]), redirect_uri,
                          frozenset(str(form.get("scope", "")).split()))
    query = {"code": code}
    if form.get("state"):
        query["state"] = str(form["state"])
    raise web.HTTPFound(str(URL(redirect_uri).update_query(query)))


def add_routes(app: web.Application, sandbox: Sandbox) -> None:
    app[SANDBOX] = sandbox
    app.router.add_get("/oauth2/authorize", authorize_page)
    app.router.add_post("/oauth2/authorize", authorize_submit)
