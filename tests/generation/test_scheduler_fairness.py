"""Fairness of the scheduler as properties: the caps hold for any mix of submissions (hypothesis).

The fair order itself is tested on the pure structure in test_fair_queue.py."""

from __future__ import annotations

import asyncio
import tempfile
from pathlib import Path
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from generation.errors import QueueFull
from generation.request import RenderRequest
from generation.scheduler import JobOwner, Scheduler
from storage import BlobStore, Database


def _request(seed: int) -> RenderRequest:
    return RenderRequest(
        prompt="p", model="tiny", width=64, height=64, steps=2, guidance=5.0, sampler="euler", seeds=(seed,)
    )


@settings(max_examples=25, deadline=None)
@given(
    submits=st.lists(st.tuples(st.integers(0, 3), st.booleans()), min_size=1, max_size=30),
    per_user=st.integers(1, 4),
    total=st.integers(1, 8),
)
def test_caps_always_hold(
    submits: list[tuple[int, bool]], per_user: int, total: int, tiny_engine: Any
) -> None:
    """Caps hold for any mix of submissions and cancellations, and QueueFull comes exactly when
    a cap would be broken. The scheduler is not started, so nothing leaves the queue by rendering."""

    async def scenario(root: Path) -> None:
        db = await Database.open(root / "caps.db")
        scheduler = Scheduler(
            db, tiny_engine, BlobStore(root / "blobs"), max_queued_per_user=per_user, max_queued_total=total
        )
        queued: dict[int, int] = {}
        try:
            for i, (user, cancel_first) in enumerate(submits):
                mine = [e.job_id for e in scheduler.snapshot() if e.user_id == user]
                if cancel_first and mine:
                    assert await scheduler.cancel(mine[0])
                    queued[user] -= 1
                expect_full = queued.get(user, 0) >= per_user or sum(queued.values()) >= total
                try:
                    await scheduler.submit(_request(i), JobOwner(user, 1))
                    assert not expect_full
                    queued[user] = queued.get(user, 0) + 1
                except QueueFull as exc:
                    assert expect_full and exc.user_message
                active = await db.jobs.list_active()
                assert len(active) == sum(queued.values()) <= total
                assert all(sum(1 for j in active if j.user_id == u) <= per_user for u in queued)
                assert len(scheduler.snapshot()) == len(active)
        finally:
            await db.close()

    with tempfile.TemporaryDirectory() as tmp:
        asyncio.run(scenario(Path(tmp)))
