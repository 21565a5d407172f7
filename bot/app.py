"""`atelier run`: settings -> services -> discord.py client, with a clean shutdown on SIGINT/SIGTERM
(the running job finishes or goes back to the queue; nothing queued is lost)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
from typing import Any

from bot.client import AtelierBot
from bot.endpoint import point_at
from bot.services import Services
from bot.settings import Settings
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

    async def start(self) -> None:
        point_at(self.settings.discord_api_base, self.settings.discord_gateway_url)
        self.services = await Services.open(self.settings, engine=self._engine)
        await self.services.start()
        self.bot = AtelierBot(self.services, **self._client_options)
        await self.bot.login(self.settings.token())
        self._task = asyncio.create_task(self.bot.connect(reconnect=True), name="atelier-gateway")

    async def wait_ready(self, timeout: float = 30) -> None:  # noqa: ASYNC109
        assert self.bot is not None
        await asyncio.wait_for(self.bot.wait_until_ready(), timeout)

    async def stop(self) -> None:
        """Idempotent: close the client, then the scheduler (running job finishes or is requeued), then
        the database."""
        bot, task, services = self.bot, self._task, self.services
        self.bot = self._task = self.services = None
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


def run_bot(settings: Settings) -> int:
    settings.token()  # fail fast, with a clear message, before loading a model

    async def main() -> None:
        app = App(settings)
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        await app.start()
        waiter = asyncio.create_task(stop.wait())
        assert app.gateway_task is not None
        await asyncio.wait({waiter, app.gateway_task}, return_when=asyncio.FIRST_COMPLETED)
        log.info("shutting down")
        await app.stop()

    asyncio.run(main())
    return 0
