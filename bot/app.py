"""`atelier run`: settings -> services -> discord.py client, with a clean shutdown on SIGINT/SIGTERM
(the running job finishes or goes back to the queue; nothing queued is lost)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import secrets
import signal
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import aiohttp
import discord
import discord.gateway
import discord.http

from bot.client import AtelierBot
from bot.config import Settings
from bot.endpoint import point_at
from bot.services import Services, StartupFailed
from generation.engine import Engine

log = logging.getLogger(__name__)


class App:
    """One running bot: its services and its Discord client. Tests start and stop several in turn."""

    def __init__(self, settings: Settings, *, engine: Engine | None = None, **client_options: Any) -> None:
        self.settings = settings
        self._engine = engine
        self._client_options = client_options
        self.services: Services | None = None
        self.bot: AtelierBot | None = None
        self._task: asyncio.Task[None] | None = None
        self._web: Any = None  # the web gallery's aiohttp runner, when ATELIER_WEB_ADDR is set

    async def start(self) -> None:
        """Open the services and log in. On any failure everything opened so far is closed again (the
        data dir lock released, the database thread ended) and a StartupFailed says why in one line."""
        point_at(self.settings.discord_api_base, self.settings.discord_gateway_url)
        services = await Services.open(self.settings, engine=self._engine)
        await services.start()  # closes the services itself if the scheduler cannot start
        self.services = services
        try:
            self.bot = AtelierBot(services, **self._client_options)
            await self.bot.login(self.settings.token())
            await self._reach_gateway()
        except Exception as exc:
            await self.stop()
            failure = discord_failure(exc)
            if failure is None:
                raise
            raise failure from None
        except BaseException:
            await self.stop()
            raise
        self._task = asyncio.create_task(self.bot.connect(reconnect=True), name="atelier-gateway")
        if self.settings.web_addr:
            try:
                await self._start_web(services)
            except BaseException:
                await self.stop()
                raise

    async def _start_web(self, services: Services) -> None:
        """The web gallery, in this process on this database (after login: its OAuth2 client id defaults
        to the application's id, which login learns)."""
        from web.server import start_web

        assert self.bot is not None
        config = web_config(self.settings, self.bot.application_id, services.registry.names())
        bot = self.bot

        def bot_guilds() -> set[int] | None:
            return {g.id for g in bot.guilds} if bot.is_ready() else None

        try:
            self._web = await start_web(config, services.db, services.blobs, self.settings.web_addr or "",
                                        bot_guilds)
        except OSError as exc:
            raise StartupFailed(f"cannot serve the web gallery on {self.settings.web_addr}: {exc}") from None

    async def _reach_gateway(self) -> None:
        """Open and close one socket to the gateway before discord.py's connect loop takes over.

        That loop retries forever, and on a first connection that fails it logs a traceback and dies on
        an AttributeError (it has no session to resume yet); an unreachable gateway at start must
        instead end the process with one line. No IDENTIFY is sent, so this costs no session start."""
        assert self.bot is not None
        gateway = discord.gateway.DiscordWebSocket.DEFAULT_GATEWAY
        try:
            async with asyncio.timeout(30):
                ws = await self.bot.http.ws_connect(str(gateway))
                await ws.close()
        except (OSError, aiohttp.ClientError, TimeoutError) as exc:
            reason = exc or "timed out"
            raise StartupFailed(f"cannot reach the Discord gateway at {gateway}: {reason}") from None

    async def wait_ready(self, timeout: float = 30) -> None:  # noqa: ASYNC109
        assert self.bot is not None
        await asyncio.wait_for(self.bot.wait_until_ready(), timeout)

    async def stop(self) -> None:
        """Idempotent: close the client, then the scheduler (running job finishes or is requeued), then
        the database."""
        bot, task, services, web = self.bot, self._task, self.services, self._web
        self.bot = self._task = self.services = self._web = None
        if web is not None:
            await web.cleanup()
        if bot is not None:
            await bot.close()
        if task is not None:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        if services is not None:
            await services.close()

    async def run_forever(self) -> None:
        assert self._task is not None
        await self._task

    @property
    def gateway_task(self) -> asyncio.Task[None] | None:
        return self._task


def web_config(settings: Settings, application_id: int | None, models: Sequence[str]) -> Any:
    """The web gallery's settings: OAuth2 against the same Discord the bot talks to (DESIGN §3)."""
    from web.config import DISCORD_API, WebConfig

    if settings.oauth_client_secret is None or not settings.oauth_client_secret.get_secret_value():
        raise StartupFailed("ATELIER_WEB_ADDR is set but ATELIER_OAUTH_CLIENT_SECRET is not "
                            "(the OAuth2 secret of the bot's Discord application)")
    client_id = settings.oauth_client_id or application_id
    if client_id is None:
        raise StartupFailed("set ATELIER_OAUTH_CLIENT_ID (the application id could not be read)")
    return WebConfig(
        public_url=(settings.public_url or f"http://{settings.web_addr}").rstrip("/"),
        client_id=str(client_id), client_secret=settings.oauth_client_secret.get_secret_value(),
        secret_key=session_key(settings), api_base=settings.discord_api_base or DISCORD_API,
        models=tuple(models))


def session_key(settings: Settings) -> bytes:
    """ATELIER_WEB_SECRET, or a random key made once and kept (owner-only) in the data dir, so sessions
    outlive a restart."""
    if settings.web_secret is not None and settings.web_secret.get_secret_value():
        return settings.web_secret.get_secret_value().encode()
    path = Path(settings.data_dir) / "web-session.key"
    try:
        return bytes.fromhex(path.read_text().strip())
    except (FileNotFoundError, ValueError):
        key = secrets.token_bytes(32)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as fh:
            fh.write(key.hex())
        return key


def discord_failure(exc: BaseException) -> StartupFailed | None:
    """One line for the operator when Discord refuses or cannot be reached; None for anything else."""
    if isinstance(exc, discord.LoginFailure):
        return StartupFailed(f"Discord rejected the bot token (check DISCORD_TOKEN): {exc}")
    if isinstance(exc, discord.PrivilegedIntentsRequired):
        return StartupFailed(str(exc))
    if isinstance(exc, discord.ConnectionClosed):
        return StartupFailed(f"Discord closed the gateway connection (code {exc.code}): {exc.reason or exc}")
    if isinstance(exc, discord.HTTPException):
        return StartupFailed(f"Discord refused a start-up call: {exc.status} {exc.text or exc}")
    if isinstance(exc, OSError | aiohttp.ClientError | TimeoutError):
        reason = exc or type(exc).__name__
        return StartupFailed(f"cannot reach Discord at {discord.http.Route.BASE}: {reason}")
    return None


def run_bot(settings: Settings) -> int:
    """Serve until SIGINT / SIGTERM (exit 0). A start that fails, or a gateway connection that ends on
    its own, raises StartupFailed: the process must exit non-zero so its supervisor restarts it."""
    settings.token()  # fail fast, with a clear message, before loading a model

    async def main() -> None:
        app = App(settings)
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        await app.start()
        waiter = asyncio.create_task(stop.wait())
        gateway = app.gateway_task
        assert gateway is not None
        await asyncio.wait({waiter, gateway}, return_when=asyncio.FIRST_COMPLETED)
        log.info("shutting down")
        waiter.cancel()
        await app.stop()
        if stop.is_set() or not gateway.done() or gateway.cancelled():
            return
        exc = gateway.exception()
        if exc is None:
            raise StartupFailed("the Discord gateway connection ended")
        failure = discord_failure(exc)
        if failure is None:
            raise exc
        raise failure from None

    asyncio.run(main())
    return 0
