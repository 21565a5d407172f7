"""Database files at an earlier schema version, for migration tests: made by the migrations of that
time, so they stay right whatever migrations come later."""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from storage.migrations import MIGRATIONS


@contextmanager
def old_schema(path: Path, version: int) -> Iterator[sqlite3.Connection]:
    """A database file at an earlier schema version, made by the migrations of that time."""
    conn = sqlite3.connect(path, isolation_level=None)
    try:
        for script in MIGRATIONS[:version]:
            conn.executescript(script)
        conn.execute(f"PRAGMA user_version = {version}")
        yield conn
    finally:
        conn.close()


def old_job(conn: sqlite3.Connection, user_id: int, guild_id: int, prompt: str, *, private: bool,
             favourite: list[bool], deleted: int = -1) -> list[int]:
    """A finished job with one image per `favourite` flag, written as the code of that schema did."""
    job = conn.execute(
        """INSERT INTO jobs (guild_id, user_id, kind, request, batch_key, status, private, created_at)
           VALUES (?, ?, 'txt2img', ?, 'k', 'done', ?, 0)""",
        (guild_id, user_id, json.dumps({"prompt": prompt}), int(private))).lastrowid
    ids = []
    for i, fav in enumerate(favourite):
        ids.append(int(conn.execute(
            """INSERT INTO images (job_id, idx, seed, blob, width, height, created_at, guild_id, user_id,
                                   prompt, favourite, deleted)
               VALUES (?, ?, ?, ?, 64, 64, 0, ?, ?, ?, ?, ?)""",
            (job, i, i, f"{job:032x}{i:032x}.png", guild_id, user_id, prompt, int(fav), int(i == deleted)),
        ).lastrowid or 0))
    return ids
