"""A broken environment ends `atelier run` loudly: a non-zero exit within seconds, one `error:` line on
stderr and no traceback, so systemd or Docker see the failure and restart it. Before, each of these
printed the error and then hung forever on the database thread that was never closed."""

from __future__ import annotations

import asyncio
import os
import socket
import sqlite3
import sys
import threading
from pathlib import Path

import pytest

from bot.app import App
from bot.services import StartupFailed
from generation.tiny import tiny_model_dir
from sandbox import Sandbox
from storage.db import Database
from storage.lock import ProcessLock
from tests.bot.conftest import make_settings, sandbox_env

# A hang detector only (the child pays for importing torch and loading the tiny model), never a timing.
HANG_S = 90


def closed_port() -> int:
    """A local port nothing listens on: connecting to it is refused at once."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def run_atelier(tmp_path: Path, env: dict[str, str]) -> tuple[int, str]:
    """`atelier run` as a real process; returns (exit code, stderr)."""
    full = {**os.environ, "HF_HUB_OFFLINE": "1", "DISCORD_TOKEN": "not-a-real-token", **env}
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "bot.cli", "run", env=full, cwd=str(tmp_path),
        stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.PIPE,
    )
    try:
        _, err = await asyncio.wait_for(proc.communicate(), HANG_S)
    except TimeoutError:
        proc.kill()
        await proc.wait()
        raise AssertionError("atelier run hung instead of exiting") from None
    assert proc.returncode is not None
    return proc.returncode, err.decode(errors="replace")


def the_error(code: int, stderr: str) -> str:
    """The one line an operator reads: it must be there, once, last, and with no traceback."""
    assert code != 0, stderr[-3000:]
    assert "Traceback" not in stderr, stderr[-3000:]
    lines = stderr.strip().splitlines()
    errors = [line for line in lines if line.startswith("error:")]
    assert len(errors) == 1 and lines[-1] == errors[0], stderr[-3000:]
    return errors[0]


@pytest.fixture
def tiny_env(tiny_engine: object, tiny_data_dir: Path) -> dict[str, str]:
    # The session's tiny model (written by tiny_engine) as a local folder: the child loads it instead of
    # writing a new one.
    return {"ATELIER_MODEL": str(tiny_model_dir(tiny_data_dir, False))}


async def test_a_missing_model_folder(tmp_path: Path) -> None:
    line = the_error(*await run_atelier(tmp_path, {"ATELIER_DATA_DIR": str(tmp_path / "data"),
                                                   "ATELIER_MODEL": str(tmp_path / "no-such-model")}))
    assert "Could not load model" in line and "no-such-model" in line


async def test_a_corrupt_checkpoint_file(tmp_path: Path) -> None:
    checkpoint = tmp_path / "model.safetensors"
    checkpoint.write_bytes(b"\x00not a checkpoint at all" * 10)
    line = the_error(*await run_atelier(tmp_path, {"ATELIER_DATA_DIR": str(tmp_path / "data"),
                                                   "ATELIER_MODEL": str(checkpoint)}))
    assert "model.safetensors is not a readable .safetensors checkpoint" in line


async def test_malformed_models_setting(tmp_path: Path) -> None:
    line = the_error(*await run_atelier(tmp_path, {"ATELIER_DATA_DIR": str(tmp_path / "data"),
                                                   "ATELIER_MODELS": "garbage"}))
    assert line == "error: ATELIER_MODELS entry 'garbage' must look like name=source"


async def test_a_data_dir_that_cannot_be_created(tmp_path: Path) -> None:
    # Tests run as root, and chmod does not stop root: a path under a regular file fails for anyone.
    (tmp_path / "afile").write_text("not a directory")
    data_dir = tmp_path / "afile" / "data"
    line = the_error(*await run_atelier(tmp_path, {"ATELIER_DATA_DIR": str(data_dir)}))
    assert line == f"error: the data dir {data_dir} is not usable: Not a directory"


async def test_a_rejected_token(sandbox: Sandbox, tmp_path: Path, tiny_env: dict[str, str]) -> None:
    env = {**sandbox_env(sandbox, tmp_path / "data"), **tiny_env, "DISCORD_TOKEN": "wrong"}
    line = the_error(*await run_atelier(tmp_path, env))
    assert "Discord rejected the bot token" in line
    assert "wrong" not in line  # the token itself is never printed
    assert not sandbox.gateway.ready.is_set()


async def test_an_unreachable_api(tmp_path: Path, tiny_env: dict[str, str]) -> None:
    base = f"http://127.0.0.1:{closed_port()}/api/v10"
    env = {"ATELIER_DATA_DIR": str(tmp_path / "data"), "ATELIER_DISCORD_API_BASE": base, **tiny_env}
    line = the_error(*await run_atelier(tmp_path, env))
    assert line.startswith(f"error: cannot reach Discord at {base}")


async def test_an_unreachable_gateway(sandbox: Sandbox, tmp_path: Path, tiny_env: dict[str, str]) -> None:
    env = {**sandbox_env(sandbox, tmp_path / "data"), **tiny_env,
           "ATELIER_DISCORD_GATEWAY_URL": f"ws://127.0.0.1:{closed_port()}/"}
    line = the_error(*await run_atelier(tmp_path, env))
    assert "cannot reach the Discord gateway" in line


def _non_daemon_threads() -> set[threading.Thread]:
    # The loop's default executor ("asyncio_N") is shut down by asyncio.run itself; anything else that
    # is not a daemon (aiosqlite's thread, a render thread) would keep a failed process alive.
    return {t for t in threading.enumerate() if not t.daemon and t is not threading.main_thread()
            and not t.name.startswith("asyncio_")}


@pytest.mark.parametrize("case", ["model", "scheduler", "token"])
async def test_a_failed_start_releases_the_data_dir(case: str, sandbox: Sandbox, tmp_path: Path,
                                                    tiny_engine: object) -> None:
    """In-process: whatever fails after the database is open (the engine, the scheduler, Discord), the
    start closes it again (its thread is what kept the process alive) and drops the data dir lock, so a
    retry in this process or the next one can take it."""
    # The engine passed in is the caller's, and so is its torch thread (it outlives an App); one the
    # start makes itself ("model") must end with it.
    await tiny_engine.call(lambda: None)  # type: ignore[attr-defined]
    before = _non_daemon_threads()
    data_dir = tmp_path / "data"
    locker: sqlite3.Connection | None = None
    if case == "model":
        app = App(make_settings(sandbox, data_dir, ATELIER_MODEL=str(tmp_path / "gone")))
    elif case == "scheduler":
        # Another process holds the database's write lock for longer than the busy timeout, so the
        # scheduler cannot recover the queue at start.
        db = await Database.open(data_dir / "atelier.db")
        await db.close()
        locker = sqlite3.connect(data_dir / "atelier.db", isolation_level=None, check_same_thread=False)
        locker.execute("BEGIN EXCLUSIVE")
        app = App(make_settings(sandbox, data_dir), engine=tiny_engine)  # type: ignore[arg-type]
    else:
        app = App(make_settings(sandbox, data_dir, DISCORD_TOKEN="wrong"), engine=tiny_engine)  # type: ignore[arg-type]
    try:
        with pytest.raises(Exception) as failure:
            await app.start()
    finally:
        if locker is not None:
            locker.close()
    if case != "model":
        assert isinstance(failure.value, StartupFailed), failure.value
    assert app.services is None and app.bot is None
    lock = ProcessLock(data_dir / "atelier.lock")
    lock.acquire()  # raises DataDirInUse if the failed start still held it
    lock.release()
    for _ in range(50):  # a closed aiosqlite thread ends a moment after close() returns
        if _non_daemon_threads() <= before:
            break
        await asyncio.sleep(0.1)
    assert _non_daemon_threads() <= before
