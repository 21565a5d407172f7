"""The bot comes online only once its model is warm (with ATELIER_COMPILE: compiled for every size its
jobs use), so no member's job waits on loading or compiling."""

from __future__ import annotations

import asyncio
import contextlib
from pathlib import Path

from bot.app import App
from generation.engine import Engine
from generation.models import ModelRegistry
from sandbox import Sandbox
from tests.bot.conftest import make_settings
from tests.bot.helpers import imagine


async def test_the_bot_takes_no_work_until_its_model_is_warm(
        sandbox: Sandbox, tiny_data_dir: Path, tmp_path: Path) -> None:
    engine = Engine(ModelRegistry([("tiny", "tiny")], tiny_data_dir, device="cpu"))  # cold
    engine.step_gate.close()  # the warm-up render waits after its step until the gate opens
    app = App(make_settings(sandbox, tmp_path / "data"), engine=engine, guild_ready_timeout=0.2)
    starting = asyncio.create_task(app.start())
    try:
        assert await asyncio.to_thread(engine.step_gate.holding.wait, 60)
        # Warming up: not on the gateway, no commands offered, so no member can ask for anything yet.
        assert sandbox.gateway.identifies == 0
        assert sandbox.commands(sandbox.guild) == []
        assert not starting.done()

        engine.step_gate.open()
        await asyncio.wait_for(starting, 60)
        await app.wait_ready()
        alice, general = sandbox.users["alice"], sandbox.channel("general")
        result = await imagine(sandbox, alice, general, "a lighthouse --steps 2")
        assert result.attachments
    finally:
        engine.step_gate.open()
        if not starting.done():
            starting.cancel()
        with contextlib.suppress(BaseException):
            await starting
        await app.stop()
