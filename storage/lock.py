"""One Atelier process per data dir.

Two bots on one database would both take up each other's running jobs at start-up (recovery treats
every running job as abandoned, which is what makes a restart after SIGKILL immediate) and deliver
results twice. An exclusive `flock` on a file beside the database prevents it. The kernel drops the
lock when the process dies, however it dies, so a crash never leaves a stale lock behind.
"""

from __future__ import annotations

import contextlib
import os
from pathlib import Path

from storage.errors import StorageError

try:
    import fcntl
except ImportError:  # Windows: no flock; the guard is skipped there.
    fcntl = None  # type: ignore[assignment]


class DataDirInUse(StorageError):
    """Another live process holds the data dir."""


class ProcessLock:
    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self._fd: int | None = None

    def acquire(self) -> None:
        if fcntl is None or self._fd is not None:
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 32, 0).decode(errors="replace").strip() or "?"
            os.close(fd)
            raise DataDirInUse(
                f"another Atelier process (pid {holder}) is using {self.path.parent}; stop it first, "
                "or give this one its own ATELIER_DATA_DIR"
            ) from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        self._fd = fd

    def release(self) -> None:
        fd, self._fd = self._fd, None
        if fd is not None:
            with contextlib.suppress(OSError):
                os.ftruncate(fd, 0)
            os.close(fd)  # closing the descriptor drops the flock
