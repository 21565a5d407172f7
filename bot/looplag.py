"""The event loop's worst stall, for operators and bench/e2e.py: a task that sleeps a short interval and
notes how late it wakes. A loop that stalls delays acknowledgements (Discord's 3 s limit) and heartbeats.

Cheap on purpose: one wake-up per interval, no per-event bookkeeping."""

from __future__ import annotations

import asyncio
import contextlib
import time

INTERVAL_S = 0.05


class LoopLag:
    def __init__(self, interval_s: float = INTERVAL_S) -> None:
        self.interval_s = interval_s
        self._max = 0.0
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.create_task(self._run(), name="atelier-loop-lag")

    async def stop(self) -> None:
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    async def _run(self) -> None:
        while True:
            start = time.perf_counter()
            await asyncio.sleep(self.interval_s)
            self._max = max(self._max, time.perf_counter() - start - self.interval_s)

    def take_max(self) -> float:
        """The worst lag in seconds since the previous call (so each delivery reports its own render)."""
        worst, self._max = self._max, 0.0
        return worst
