"""Storage faults as SQLite and the OS really raise them: a database on a full disk (a 512 KiB tmpfs)
and a database locked by another connection."""

from __future__ import annotations

import contextlib
import sqlite3
import subprocess
from collections.abc import Iterator
from functools import partial
from pathlib import Path

import pytest

from storage import Database
from storage.errors import StorageUnavailable
from storage.retry import DATABASE_BUSY, DISK_FULL, retry_async


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    mount = tmp_path / "small"
    mount.mkdir()
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=512k", "tmpfs", str(mount)],
                      capture_output=True).returncode != 0:
        pytest.skip("mounting a tmpfs is not allowed here")
    try:
        yield mount
    finally:
        subprocess.run(["umount", str(mount)], check=False)


def fill(root: Path) -> Path:
    filler = root / "filler"
    with filler.open("wb", buffering=0) as fh, contextlib.suppress(OSError):
        while True:
            fh.write(b"\0" * 512)
    return filler


async def test_a_full_disk_gives_up_with_a_readable_reason_then_recovers(small_disk: Path) -> None:
    db = await Database.open(small_disk / "atelier.db")
    try:
        create = partial(db.jobs.create, user_id=1, kind="txt2img", request={"prompt": "x" * 4000},
                         batch_key="k")
        filler = fill(small_disk)
        with pytest.raises(StorageUnavailable) as failure:
            await retry_async(create, "create a job", delays=(0.01, 0.01))
        assert failure.value.reason == DISK_FULL == "the server's disk is full"
        assert await db.jobs.list_active() == []  # nothing half-written

        filler.unlink()
        job = await retry_async(create, "create a job", delays=(0.01,))
        assert [j.id for j in await db.jobs.list_active()] == [job.id]
    finally:
        await db.close()


async def test_a_lock_held_past_the_busy_timeout_is_reported_as_busy(tmp_path: Path) -> None:
    db = await Database.open(tmp_path / "atelier.db", busy_timeout_ms=50)
    other = sqlite3.connect(tmp_path / "atelier.db", isolation_level=None)
    try:
        other.execute("BEGIN EXCLUSIVE")
        with pytest.raises(StorageUnavailable) as failure:
            await retry_async(partial(db.jobs.create, user_id=1, kind="txt2img", request={}, batch_key="k"),
                              "create a job", delays=(0.01,))
        assert failure.value.reason == DATABASE_BUSY
        other.execute("ROLLBACK")
        # The failed attempts left no transaction open behind them: the next write just works.
        await db.jobs.create(user_id=1, kind="txt2img", request={}, batch_key="k")
    finally:
        other.close()
        await db.close()
