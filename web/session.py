"""Signed session cookies, the login's state cookie, CSRF tokens and the return address after login.

Signing uses itsdangerous (the Pallets project's signer behind Flask's sessions; small, audited, kept up):
HMAC-SHA1 over a key derived per purpose (salt), with a signed timestamp checked against a max age. The
session holds nothing secret (user id, display name, shared guilds, CSRF token; never a Discord token), so
it needs to be tamper-proof, not hidden: aiohttp-session's encrypted cookies (plus cryptography) would add
a dependency and nothing else. Cookies are HttpOnly (no script reads them) and SameSite=Lax: Strict would
drop the state cookie on Discord's redirect back, and Lax still keeps them off cross-site POSTs.
"""

from __future__ import annotations

import hmac
import secrets
from dataclasses import dataclass
from typing import Any

from aiohttp import web
from itsdangerous import BadSignature, URLSafeTimedSerializer
from yarl import URL

from storage.access import Member
from web.config import WebConfig

SESSION_COOKIE = "atelier_session"
LOGIN_COOKIE = "atelier_login"
LOGIN_MAX_AGE = 600


@dataclass(frozen=True)
class Session:
    user_id: int
    name: str
    guilds: dict[int, str]  # the guilds this member shares with the bot: id -> name
    csrf: str

    def member(self) -> Member:
        return Member.of(self.user_id, self.guilds)

    def dump(self) -> dict[str, Any]:
        return {"u": str(self.user_id), "n": self.name, "g": {str(k): v for k, v in self.guilds.items()},
                "c": self.csrf}

    @classmethod
    def load(cls, data: Any) -> Session | None:
        try:
            return cls(int(data["u"]), str(data["n"]), {int(k): str(v) for k, v in data["g"].items()},
                       str(data["c"]))
        except (KeyError, TypeError, ValueError, AttributeError):
            return None


def safe_return(target: str | None) -> str:
    """Only a path on this site comes back from the login: no scheme, no host, no `//evil` or `/\\evil`
    (browsers read both as another host), no control characters."""
    if not target or not target.startswith("/") or target.startswith(("//", "/\\")):
        return "/"
    if any(c in target for c in "\\\r\n\t") or any(ord(c) < 32 for c in target):
        return "/"
    url = URL(target)
    if url.scheme or url.host or url.raw_authority:
        return "/"
    return target


class Sessions:
    def __init__(self, config: WebConfig) -> None:
        self._config = config
        self._session = URLSafeTimedSerializer(config.secret_key, salt="atelier-web-session")
        self._login = URLSafeTimedSerializer(config.secret_key, salt="atelier-web-login")

    def _cookie(self, response: web.StreamResponse, name: str, value: str, max_age: int) -> None:
        response.set_cookie(name, value, max_age=max_age, httponly=True, samesite="Lax", path="/",
                            secure=self._config.secure)

    def read(self, request: web.Request) -> Session | None:
        raw = request.cookies.get(SESSION_COOKIE)
        if not raw:
            return None
        try:
            data = self._session.loads(raw, max_age=int(self._config.session_hours * 3600))
        except BadSignature:  # also SignatureExpired
            return None
        return Session.load(data)

    def start(self, response: web.StreamResponse, user_id: int, name: str, guilds: dict[int, str]) -> None:
        session = Session(user_id, name, guilds, secrets.token_urlsafe(24))
        self._cookie(response, SESSION_COOKIE, self._session.dumps(session.dump()),
                     int(self._config.session_hours * 3600))
        response.del_cookie(LOGIN_COOKIE, path="/")

    def end(self, response: web.StreamResponse) -> None:
        response.del_cookie(SESSION_COOKIE, path="/")

    def begin_login(self, response: web.StreamResponse, state: str, return_to: str) -> None:
        self._cookie(response, LOGIN_COOKIE, self._login.dumps({"s": state, "r": safe_return(return_to)}),
                     LOGIN_MAX_AGE)

    def finish_login(self, request: web.Request, state: str) -> str | None:
        """The return address if `state` is the one this browser was sent off with, else None."""
        raw = request.cookies.get(LOGIN_COOKIE)
        if not raw or not state:
            return None
        try:
            data = self._login.loads(raw, max_age=LOGIN_MAX_AGE)
        except BadSignature:
            return None
        if not isinstance(data, dict) or not hmac.compare_digest(str(data.get("s", "")), state):
            return None
        return safe_return(str(data.get("r", "/")))


def csrf_ok(session: Session | None, token: str | None) -> bool:
    return session is not None and bool(token) and hmac.compare_digest(session.csrf, str(token))
