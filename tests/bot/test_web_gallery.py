"""`atelier run` with ATELIER_WEB_ADDR: the web gallery runs in the bot's process on its database; its
OAuth2 client id is the application's own; a member logs in through the sandbox and finds the image they
just made with /imagine, with its Discord message linked, and sees only the guilds shared with the bot."""

from __future__ import annotations

import hashlib
import re
from typing import Any

from yarl import URL

from sandbox import Sandbox
from tests.bot.helpers import imagine, job_id_of
from tests.web.conftest import cookie_session, free_port, oauth_login


async def test_the_gallery_serves_what_the_bot_made(sandbox: Sandbox, start_bot: Any) -> None:
    port = free_port()
    lonely = sandbox.add_guild("No bot here")
    alice = sandbox.users["alice"]
    lonely.members.pop(sandbox.bot_user.id)  # alice is in it, the bot is not
    sandbox.add_user("alice", lonely)
    app = await start_bot(ATELIER_WEB_ADDR=f"127.0.0.1:{port}",
                          ATELIER_OAUTH_CLIENT_SECRET=sandbox.oauth.client_secret)
    general = sandbox.channel("general")
    result = await imagine(sandbox, alice, general, "a harbour at dawn --steps 2 --n 1")
    job_id = job_id_of(result)
    base = URL(f"http://127.0.0.1:{port}")
    async with cookie_session() as http:
        start = await http.get(base / "login", allow_redirects=False)
        assert URL(start.headers["Location"]).query["client_id"] == str(sandbox.application_id)
        assert (await oauth_login(http, base, alice)).headers["Location"] == "/me"
        grid = await (await http.get(base / "me")).text()
        assert "Atelier Test" in grid and "No bot here" not in grid
        image_id = int(re.findall(r'data-id="(\d+)"', grid)[0])
        page = await (await http.get(base / "image" / str(image_id))).text()
        assert f"Job {job_id}" in page and "a harbour at dawn" in page
        link = f"{sandbox.base_url}/channels/{sandbox.guild.id}/{general.id}/{result.id}"
        assert link in page
        assert app.services is not None
        image = await app.services.db.images.get(image_id)
        assert image is not None
        data = await (await http.get(base / "file" / image.blob, params={"download": "1"})).read()
        assert hashlib.sha256(data).hexdigest() == image.blob[:64]
        assert b"a harbour at dawn" in data  # the PNG carries its parameters
    await app.stop()
    async with cookie_session() as http:  # stopped with the bot
        try:
            await http.get(base / "me")
            raise AssertionError("the gallery outlived the bot")
        except OSError:
            pass


def test_web_settings_fail_fast_and_keep_the_session_key(tmp_path: Any) -> None:
    from bot.app import session_key, web_config
    from bot.config import Settings
    from bot.services import StartupFailed

    def settings(**values: Any) -> Settings:
        return Settings(_env_file=None, ATELIER_DATA_DIR=str(tmp_path), **values)  # type: ignore[call-arg]

    try:
        web_config(settings(ATELIER_WEB_ADDR="127.0.0.1:8080"), 42, [])
        raise AssertionError("a web gallery without an OAuth2 secret started")
    except StartupFailed as exc:
        assert "ATELIER_OAUTH_CLIENT_SECRET" in str(exc)
    config = web_config(settings(ATELIER_WEB_ADDR="127.0.0.1:8080", ATELIER_OAUTH_CLIENT_SECRET="s3cret",
                                 ATELIER_DISCORD_API_BASE="http://127.0.0.1:9/api/v10"), 42, ["tiny"])
    assert config.client_id == "42" and config.public_url == "http://127.0.0.1:8080"
    assert str(config.authorize_url) == "http://127.0.0.1:9/oauth2/authorize"
    assert config.token_url == "http://127.0.0.1:9/api/v10/oauth2/token"
    assert "s3cret" not in repr(config)
    assert "s3cret" not in repr(settings(ATELIER_OAUTH_CLIENT_SECRET="s3cret"))
    # The signing key is made once, kept owner-only, and the same after a restart.
    first = session_key(settings())
    assert first == session_key(settings()) and len(first) == 32
    assert (tmp_path / "web-session.key").stat().st_mode & 0o777 == 0o600
    assert session_key(settings(ATELIER_WEB_SECRET="mine")) == b"mine"
