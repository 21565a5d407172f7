"""One process per data dir: a second holder is refused with a clear message; a killed holder leaves
no stale lock."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from storage.lock import DataDirInUse, ProcessLock

HOLD = """
import sys, time
from storage.lock import ProcessLock
ProcessLock(__import__("pathlib").Path(sys.argv[1])).acquire()
print("held", flush=True)
time.sleep(600)
"""


def test_a_second_holder_is_refused_until_the_first_releases(tmp_path: Path) -> None:
    first, second = ProcessLock(tmp_path / "atelier.lock"), ProcessLock(tmp_path / "atelier.lock")
    first.acquire()
    with pytest.raises(DataDirInUse, match=rf"pid {os.getpid()}\b.*ATELIER_DATA_DIR"):
        second.acquire()
    first.release()
    second.acquire()
    second.release()


def test_a_killed_holder_leaves_no_stale_lock(tmp_path: Path) -> None:
    path = tmp_path / "atelier.lock"
    child = subprocess.Popen([sys.executable, "-c", HOLD, str(path)], stdout=subprocess.PIPE,
                             cwd=Path(__file__).resolve().parents[2])
    try:
        assert child.stdout is not None and child.stdout.readline().strip() == b"held"
        with pytest.raises(DataDirInUse, match=rf"pid {child.pid}\b"):
            ProcessLock(path).acquire()
        child.send_signal(signal.SIGKILL)
        child.wait(timeout=30)
    finally:
        if child.poll() is None:
            child.kill()
    deadline = time.monotonic() + 10
    lock = ProcessLock(path)
    while True:
        try:
            lock.acquire()
            break
        except DataDirInUse:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.05)
    lock.release()
