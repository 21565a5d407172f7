"""The web gallery on real parts: the sandbox's OAuth2 endpoints, a real SQLite database filled through the
real stores, real PNG files in the blob store, and the app served on a real socket."""

from __future__ import annotations

import io
import socket
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from PIL import Image
from yarl import URL

from sandbox import Sandbox
from storage import Database, NewImage
from storage.blobs import BlobStore
from web.config import WebConfig
from web.server import build_app


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def png(colour: tuple[int, int, int], size: tuple[int, int] = (64, 64)) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", size, colour).save(buf, format="PNG")
    return buf.getvalue()


async def done_job(db: Database, blobs: BlobStore, user_id: int, guild_id: int | None, prompt: str, *,
                   colours: list[tuple[int, int, int]], private: bool = False,
                   size: tuple[int, int] = (64, 64), kind: str = "txt2img",
                   parent: tuple[int, int] | None = None) -> list[Any]:
    """A finished job made as the scheduler makes one: created, claimed, completed with its PNGs."""
    job = await db.jobs.create(
        user_id=user_id, guild_id=guild_id, kind=kind, private=private, batch_key="k",
        request={"prompt": prompt, "negative": "blurry", "seeds": list(range(len(colours))), "steps": 2,
                 "sampler": "euler", "model": "tiny", "guidance": 7.0, "kind": kind},
        parent_job_id=parent[0] if parent else None, parent_index=parent[1] if parent else None)
    await db.jobs.claim([job.id], lease_owner="w", lease_seconds=60)
    images = [NewImage(i, 100 + i, blobs.put(png(c, size)), size[0], size[1]) for i, c in enumerate(colours)]
    _, rows = await db.jobs.complete(job.id, images)
    return rows


@dataclass
class Site:
    sandbox: Sandbox
    db: Database
    blobs: BlobStore
    config: WebConfig
    url: URL

    def http(self) -> aiohttp.ClientSession:
        return cookie_session()

    async def login(self, http: aiohttp.ClientSession, user: Any,
                    next_: str = "/me") -> aiohttp.ClientResponse:
        return await oauth_login(http, self.url, user, next_)


def cookie_session() -> aiohttp.ClientSession:
    # unsafe: the cookie jar keeps cookies for an IP address (127.0.0.1), as a browser does.
    return aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True))


async def oauth_login(http: aiohttp.ClientSession, base: URL, user: Any, next_: str = "/me"
                      ) -> aiohttp.ClientResponse:
    """Through the whole flow: /login -> the sandbox's authorize page -> pick `user` -> our callback.
    Returns the callback's answer (a redirect to the return address, not followed)."""
    start = await http.get(base / "login", params={"next": next_}, allow_redirects=False)
    assert start.status == 302, await start.text()
    authorize = URL(start.headers["Location"])
    page = await http.get(authorize)
    assert page.status == 200 and user.name in await page.text()
    form = {k: authorize.query[k] for k in ("client_id", "redirect_uri", "response_type", "scope", "state")}
    picked = await http.post(authorize.with_query(None), data={**form, "user": str(user.id)},
                             allow_redirects=False)
    assert picked.status == 302, await picked.text()
    return await http.get(picked.headers["Location"], allow_redirects=False)


SiteFactory = Callable[..., Awaitable[Site]]


@pytest.fixture
async def site(tmp_path: Path) -> AsyncIterator[SiteFactory]:
    """Start the sandbox, a database and the gallery; `await site(**config_overrides)`."""
    cleanups: list[Callable[[], Awaitable[Any]]] = []

    async def start(**overrides: Any) -> Site:
        sandbox = Sandbox()
        await sandbox.start()
        cleanups.append(sandbox.stop)
        db = await Database.open(tmp_path / "web.db")
        cleanups.append(db.close)
        blobs = BlobStore(tmp_path / "images")
        port = free_port()
        config = WebConfig(public_url=f"http://127.0.0.1:{port}", client_id=str(sandbox.application_id),
                           client_secret=sandbox.oauth.client_secret, secret_key=b"k" * 32,
                           api_base=sandbox.api_base, models=("tiny",))
        config = replace(config, **overrides)
        runner = web.AppRunner(build_app(config, db, blobs))
        await runner.setup()
        cleanups.append(runner.cleanup)
        await web.TCPSite(runner, "127.0.0.1", port).start()
        return Site(sandbox, db, blobs, config, URL(config.public_url))

    yield start
    for cleanup in reversed(cleanups):
        await cleanup()
