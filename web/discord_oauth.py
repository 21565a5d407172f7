"""Discord OAuth2, authorization-code flow (scopes `identify guilds`): the code becomes a Bearer token,
the token tells who the member is and which guilds they are in, and then it is dropped: the gallery keeps
no Discord token, so none can leak from a cookie or a log."""

from __future__ import annotations

from dataclasses import dataclass

import aiohttp

from web.config import WebConfig

SCOPES = "identify guilds"


class OAuthFailed(Exception):
    """Discord refused the code or the token; the message is safe to show (no token, no secret)."""


@dataclass(frozen=True)
class Identity:
    user_id: int
    name: str
    guilds: dict[int, str]  # every guild the member is in: id -> name


def authorize_url(config: WebConfig, state: str) -> str:
    return str(config.authorize_url.with_query(
        client_id=config.client_id, redirect_uri=config.redirect_uri, response_type="code", scope=SCOPES,
        state=state, prompt="none"))


async def identify(config: WebConfig, code: str) -> Identity:
    timeout = aiohttp.ClientTimeout(total=15)
    async with aiohttp.ClientSession(timeout=timeout) as http:
        async with http.post(
            config.token_url,
            data={"grant_type": "authorization_code", "code": code, "redirect_uri": config.redirect_uri},
            auth=aiohttp.BasicAuth(config.client_id, config.client_secret),
        ) as resp:
            if resp.status != 200:
                # Never the body: an error page could echo the code back.
                raise OAuthFailed(f"Discord refused the login (HTTP {resp.status}).")
            token = (await resp.json(content_type=None)).get("access_token")
        if not isinstance(token, str) or not token:
            raise OAuthFailed("Discord gave no access token.")
        headers = {"Authorization": f"Bearer {token}"}
        base = config.api_base.rstrip("/")
        async with http.get(f"{base}/users/@me", headers=headers) as resp:
            if resp.status != 200:
                raise OAuthFailed(f"Discord did not say who you are (HTTP {resp.status}).")
            me = await resp.json(content_type=None)
        async with http.get(f"{base}/users/@me/guilds", headers=headers) as resp:
            if resp.status != 200:
                raise OAuthFailed(f"Discord did not list your servers (HTTP {resp.status}).")
            guilds = await resp.json(content_type=None)
    try:
        name = str(me.get("global_name") or me.get("username") or "member")
        return Identity(int(me["id"]), name, {int(g["id"]): str(g.get("name", "")) for g in guilds})
    except (KeyError, TypeError, ValueError):
        raise OAuthFailed("Discord answered in a shape we do not know.") from None
