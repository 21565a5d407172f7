"""Per-guild and per-user settings: a JSON object per id, merged on update.

The bot owns the meaning of the keys (limits, allowed channels, NSFW policy, personal defaults);
storage only keeps them, so adding a setting needs no migration.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterable, Mapping
from typing import Any

from storage.connection import Connection


class _JsonSettingsStore:
    def __init__(self, db: Connection, table: str, key_column: str) -> None:
        self._db = db
        self._table = table
        self._key = key_column

    async def get(self, owner_id: int) -> dict[str, Any]:
        row = await self._db.fetchone(f"SELECT data FROM {self._table} WHERE {self._key} = ?", (owner_id,))
        return {} if row is None else dict(json.loads(row["data"]))

    async def update(self, owner_id: int, values: Mapping[str, Any]) -> dict[str, Any]:
        """Merge `values` in; a value of None removes that key. Returns the new settings."""
        async with self._db.transaction() as conn:
            async with conn.execute(
                f"SELECT data FROM {self._table} WHERE {self._key} = ?", (owner_id,)
            ) as cur:
                row = await cur.fetchone()
            data: dict[str, Any] = {} if row is None else dict(json.loads(row["data"]))
            for key, value in values.items():
                if value is None:
                    data.pop(key, None)
                else:
                    data[key] = value
            await conn.execute(
                f"""INSERT INTO {self._table} ({self._key}, data, updated_at) VALUES (?, ?, ?)
                    ON CONFLICT ({self._key}) DO UPDATE SET data = excluded.data,
                    updated_at = excluded.updated_at""",
                (owner_id, json.dumps(data, sort_keys=True), time.time()),
            )
        return data

    async def reset(self, owner_id: int, keys: Iterable[str] | None = None) -> dict[str, Any]:
        """Drop the given keys, or everything."""
        if keys is None:
            await self._db.write(f"DELETE FROM {self._table} WHERE {self._key} = ?", (owner_id,))
            return {}
        return await self.update(owner_id, dict.fromkeys(keys))


class GuildSettingsStore(_JsonSettingsStore):
    pass


class UserSettingsStore(_JsonSettingsStore):
    pass
