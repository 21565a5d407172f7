"""Faults on demand: 429s, 5xx and slow responses for REST calls."""

from __future__ import annotations

import random
from dataclasses import dataclass, field


@dataclass
class FaultPlan:
    rate: float = 0.0
    statuses: tuple[int, ...] = (429, 500, 502, 503)
    seed: int = 0
    latency: float = 0.0
    # Small, so fault tests stay fast; discord.py sleeps exactly this long before retrying.
    retry_after: float = 0.05
    # discord.py gives up after 5 tries; capping consecutive faults per route keeps "every call
    # eventually succeeds" true, which is what a flaky-but-working Discord looks like.
    max_consecutive: int = 2
    _rng: random.Random = field(default_factory=random.Random, repr=False)
    _streaks: dict[str, int] = field(default_factory=dict, repr=False)
    _faulted_callbacks: set[str] = field(default_factory=set, repr=False)

    def configure(self, rate: float, statuses: tuple[int, ...], seed: int) -> None:
        if not 0.0 <= rate <= 1.0:
            raise ValueError("fault rate must be within [0, 1]")
        self.rate = rate
        self.statuses = tuple(statuses)
        self.seed = seed
        self._rng = random.Random(seed)
        self._streaks.clear()

    def pick(self, key: str, *, callback_of: str | None = None) -> int | None:
        """The status to fail this call with, or None to serve it.

        `key` identifies the route+resource so retries of one request share a streak.
        `callback_of` is the interaction id for ack callbacks: those are faulted at most once,
        with a status discord.py retries quickly enough to still ack within 3 s.
        """
        if self.rate <= 0.0 or not self.statuses:
            return None
        if self._streaks.get(key, 0) >= self.max_consecutive:
            self._streaks[key] = 0
            return None
        if self._rng.random() >= self.rate:
            self._streaks[key] = 0
            return None
        if callback_of is not None:
            if callback_of in self._faulted_callbacks:
                return None
            self._faulted_callbacks.add(callback_of)
            # A 429 costs `retry_after`; a 500 costs discord.py's fixed 1 s backoff.
            quick = [s for s in self.statuses if s in (429, 500, 502)]
            if not quick:
                return None
            status = self._rng.choice(quick)
        else:
            status = self._rng.choice(self.statuses)
        self._streaks[key] = self._streaks.get(key, 0) + 1
        return status
