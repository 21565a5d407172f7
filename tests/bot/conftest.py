"""A fresh sandbox Discord server and a real bot process-in-loop per test, sharing the session's tiny
engine (loading a pipeline is the expensive part)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest

from bot.app import App
from bot.config import Settings
from bot.endpoint import restore
from sandbox import Sandbox


def sandbox_env(sandbox: Sandbox, data_dir: Path) -> dict[str, str]:
    """The settings that point a bot at the sandbox, as environment variables."""
    return {
        "DISCORD_TOKEN": sandbox.bot_token,
        "ATELIER_DATA_DIR": str(data_dir),
        "ATELIER_DISCORD_API_BASE": sandbox.api_base,
        "ATELIER_DISCORD_GATEWAY_URL": sandbox.gateway_url,
        "ATELIER_DEV_GUILD_ID": str(sandbox.guild.id),
        "ATELIER_MODEL": "tiny",
    }


def make_settings(sandbox: Sandbox, data_dir: Path, **extra: Any) -> Settings:
    values: dict[str, Any] = {**sandbox_env(sandbox, data_dir), **extra}
    return Settings(_env_file=None, **values)  # type: ignore[call-arg]


@pytest.fixture
async def sandbox() -> AsyncIterator[Sandbox]:
    sb = Sandbox()
    await sb.start()
    yield sb
    await sb.stop()
    restore()


@pytest.fixture
async def start_bot(sandbox: Sandbox, tiny_engine: Any, tmp_path: Path) -> AsyncIterator[Any]:
    """Start bots on the test's sandbox and data dir; call again (after `stop()`) for a restart."""
    apps: list[App] = []

    async def start(own_engine: bool = False, **extra: Any) -> App:
        # own_engine: load a fresh engine from these settings instead of sharing the session's.
        engine = None if own_engine else tiny_engine
        app = App(make_settings(sandbox, tmp_path / "data", **extra), engine=engine, guild_ready_timeout=0.2)
        apps.append(app)
        await app.start()
        await app.wait_ready()
        return app

    yield start
    for app in reversed(apps):
        await app.stop()


@pytest.fixture
async def bot(start_bot: Callable[..., Any]) -> App:
    return await start_bot()
