"""Sliding-window rate limits kept in memory (one process serves the gallery)."""

from __future__ import annotations

import time
from collections import deque


class RateLimit:
    def __init__(self, count: int, window: float, *, max_keys: int = 10_000) -> None:
        self.count, self.window, self.max_keys = count, window, max_keys
        self._hits: dict[str, deque[float]] = {}

    def allow(self, key: str) -> bool:
        now = time.monotonic()
        hits = self._hits.get(key)
        if hits is None:
            if len(self._hits) >= self.max_keys:  # bounded memory: forget the quietest half
                self._forget(now)
            hits = self._hits[key] = deque()
        while hits and hits[0] <= now - self.window:
            hits.popleft()
        if len(hits) >= self.count:
            return False
        hits.append(now)
        return True

    def _forget(self, now: float) -> None:
        for key in [k for k, h in self._hits.items() if not h or h[-1] <= now - self.window]:
            del self._hits[key]
        if len(self._hits) >= self.max_keys:
            for key in list(self._hits)[: self.max_keys // 2]:
                del self._hits[key]
