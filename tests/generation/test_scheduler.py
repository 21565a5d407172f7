"""The scheduler and worker end to end: real SQLite files, the real tiny diffusers pipeline."""

from __future__ import annotations

import asyncio
import io
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image

from generation.errors import QueueFull
from generation.events import (
    EventStream,
    JobCancelled,
    JobDone,
    JobEvent,
    JobFailed,
    JobProgress,
    JobQueued,
    JobStarted,
)
from generation.images import read_png_params
from generation.request import Kind, RenderRequest
from generation.scheduler import JobOwner, Scheduler
from generation.worker import SOURCE_GONE, UNEXPECTED
from storage import BlobStore, Database

FINAL = (JobDone, JobFailed, JobCancelled)
# A hang guard only, never a timing assertion.
WAIT_S = 120


def request(
    seed: int = 1, *, steps: int = 2, n: int = 1, size: int = 64, model: str = "tiny",
    prompt_suffix: str = "", **kw: Any
) -> RenderRequest:
    return RenderRequest(
        prompt=f"a lighthouse at dusk {seed}{prompt_suffix}",
        model=model,
        width=size,
        height=size,
        steps=steps,
        guidance=5.0,
        sampler="euler",
        seeds=tuple(range(seed, seed + n)),
        **kw,
    )


@dataclass
class Env:
    root: Path
    engine: Any
    db: Database
    blobs: BlobStore
    schedulers: list[Scheduler] = field(default_factory=list)

    def scheduler(self, **kw: Any) -> Scheduler:
        s = Scheduler(self.db, self.engine, self.blobs, **kw)
        self.schedulers.append(s)
        return s


@pytest.fixture
async def env(tmp_path: Path, tiny_engine: Any) -> AsyncIterator[Env]:
    db = await Database.open(tmp_path / "atelier.db")
    e = Env(tmp_path, tiny_engine, db, BlobStore(tmp_path / "images"))
    yield e
    for s in e.schedulers:
        await s.stop()
    await e.db.close()


async def until(stream: EventStream, done: Callable[[JobEvent], bool]) -> list[JobEvent]:
    """Events from `stream` up to and including the first one for which `done` is true."""
    seen: list[JobEvent] = []
    async with asyncio.timeout(WAIT_S):
        async for event in stream:
            seen.append(event)
            if done(event):
                return seen
    return seen


async def all_final(stream: EventStream, ids: set[int]) -> dict[int, JobEvent]:
    finals: dict[int, JobEvent] = {}

    def check(event: JobEvent) -> bool:
        if isinstance(event, FINAL) and event.job_id in ids:
            finals[event.job_id] = event
        return set(finals) == ids

    await until(stream, check)
    return finals


async def test_a_job_renders_with_events_for_every_subscriber(env: Env) -> None:
    scheduler = env.scheduler()
    everything = scheduler.subscribe()
    await scheduler.start()
    await scheduler.pause()  # so both per-job streams exist before anything runs
    job_id = await scheduler.submit(request(7, n=2), JobOwner(1, 10, 20))
    watchers = [scheduler.subscribe(job_id), scheduler.subscribe(job_id)]
    await scheduler.resume()

    for stream in watchers:
        events = [e async for e in stream]  # a per-job stream ends after the job's final event
        assert isinstance(events[0], JobStarted)
        progress = [e for e in events if isinstance(e, JobProgress)]
        assert [p.step for p in progress] == sorted(p.step for p in progress) and progress[
            -1
        ].step == progress[-1].total
        assert all(isinstance(p.preview, Image.Image) for p in progress)
        assert isinstance(events[-1], JobDone)
    done = events[-1]
    assert isinstance(done, JobDone)
    stored = await env.db.images.for_job(job_id)
    assert [(im.index, im.seed, im.width, im.height) for im in stored] == [
        (0, 7, 64, 64),
        (1, 8, 64, 64),
    ]

    first = await until(everything, lambda e: isinstance(e, JobQueued))
    assert first[-1] == JobQueued(job_id, 1, first[-1].eta_s)  # type: ignore[union-attr]

    for image in stored:
        data = env.blobs.read(image.blob)
        assert read_png_params(data)["seed"] == image.seed
        with Image.open(io.BytesIO(data)) as png:
            assert png.size == (64, 64)
            assert png.convert("L").getextrema() != (0, 0)  # real pixels, not an empty canvas
    job = await env.db.jobs.get(job_id)
    assert job is not None and job.status == "done" and job.attempts == 1 and job.render_seconds is not None
    assert [j.id for j in await env.db.jobs.list_undelivered()] == [job_id]
    assert scheduler.position(job_id) is None


async def test_cancel_queued_at_once_and_running_at_next_step(env: Env, hold: Any) -> None:
    scheduler = env.scheduler()
    events = scheduler.subscribe()
    await scheduler.start()
    await scheduler.pause()
    hold.close()  # the render waits after its first step until the cancel
    long_id = await scheduler.submit(request(1, steps=8), JobOwner(1))
    queued_id = await scheduler.submit(request(2), JobOwner(2))
    assert await scheduler.cancel(queued_id)
    assert not await scheduler.cancel(queued_id)
    assert (await env.db.jobs.get(queued_id)).status == "cancelled"  # type: ignore[union-attr]
    assert [e.job_id for e in scheduler.snapshot()] == [long_id]

    await scheduler.resume()
    before = await until(events, lambda e: isinstance(e, JobProgress) and e.job_id == long_id)
    assert scheduler.snapshot()[0].status == "running"
    assert await scheduler.cancel(long_id)
    seen = await until(events, lambda e: isinstance(e, FINAL) and e.job_id == long_id)
    assert seen[-1] == JobCancelled(long_id)
    job = await env.db.jobs.get(long_id)
    assert job is not None and job.status == "cancelled" and await env.db.images.for_job(long_id) == []
    progress = [e for e in before + seen if isinstance(e, JobProgress) and e.job_id == long_id]
    assert progress and progress[-1].step < progress[-1].total  # stopped early, not run to the end

    # The worker lives on.
    hold.open()
    after = await scheduler.submit(request(3), JobOwner(1))
    finals = await all_final(events, {after})
    assert isinstance(finals[after], JobDone)


async def test_pause_holds_jobs_until_resume(env: Env) -> None:
    scheduler = env.scheduler()
    events = scheduler.subscribe()
    await scheduler.start()
    await scheduler.pause()
    assert scheduler.paused
    job_id = await scheduler.submit(request(4), JobOwner(1))
    await asyncio.sleep(0.3)
    assert (await env.db.jobs.get(job_id)).status == "queued"  # type: ignore[union-attr]
    assert scheduler.position(job_id) == (1, scheduler.snapshot()[0].eta_s)
    await scheduler.resume()
    assert isinstance((await all_final(events, {job_id}))[job_id], JobDone)


async def test_a_guild_pause_holds_only_that_guild_survives_a_restart_and_keeps_order(env: Env) -> None:
    first = env.scheduler()
    await first.pause(guild_id=10)
    # User 1 queues in the paused guild, then in another; user 2 only in the paused one.
    held_a = await first.submit(request(1), JobOwner(1, guild_id=10))
    free = await first.submit(request(2), JobOwner(1, guild_id=20))
    held_b = await first.submit(request(3), JobOwner(2, guild_id=10))
    held_c = await first.submit(request(4), JobOwner(1, guild_id=10))
    shown = {e.job_id: e for e in first.snapshot()}
    assert [shown[j].paused for j in (held_a, free, held_b, held_c)] == [True, False, True, True]
    assert shown[free].position == 1  # held jobs do not stand in the way
    await first.stop()

    # A new process: the pause is read back from storage; the guild's settings (the bot's) stay untouched.
    assert (await env.db.guilds.get(10)) == {} and await env.db.pauses.paused_guilds() == [10]
    second = env.scheduler()
    events = second.subscribe()
    await second.start()
    assert second.paused_in(10) and not second.paused_in(20) and not second.paused
    assert isinstance((await all_final(events, {free}))[free], JobDone)
    # Another server's newer job renders too: the held jobs (older, user 2's first in the fair order)
    # would have gone before it had they not been held.
    later = await second.submit(request(5), JobOwner(3, guild_id=20))
    assert isinstance((await all_final(events, {later}))[later], JobDone)
    assert {(await env.db.jobs.get(j)).status for j in (held_a, held_b, held_c)} == {"queued"}  # type: ignore[union-attr]

    order: list[int] = []
    events = second.subscribe()
    await second.resume(guild_id=10)
    assert not second.paused_in(10) and await env.db.pauses.paused_guilds() == []

    def started(event: JobEvent) -> bool:
        if isinstance(event, JobStarted):
            order.append(event.job_id)
        return len(order) == 3

    await until(events, started)
    # Each user's jobs oldest first, users taking turns; user 1 was just served (the free job), so
    # user 2 goes first.
    assert order == [held_b, held_a, held_c]


async def test_a_guild_resume_under_a_global_pause_puts_its_jobs_back(env: Env) -> None:
    scheduler = env.scheduler()
    events = scheduler.subscribe()
    await scheduler.pause()
    await scheduler.pause(guild_id=10)
    held = await scheduler.submit(request(1), JobOwner(1, guild_id=10))
    assert scheduler.entry(held).paused  # type: ignore[union-attr]
    await scheduler.resume(guild_id=10)
    entry = scheduler.entry(held)
    assert entry is not None and not entry.paused and entry.position == 1
    await scheduler.start()
    await scheduler.resume()
    assert isinstance((await all_final(events, {held}))[held], JobDone)


async def test_jobs_that_move_up_are_told_their_new_position_and_no_one_else(env: Env) -> None:
    """The scheduler is the one source of position updates: when a job leaves the queue, each queued
    job whose position changed gets a JobQueued with its new position; the others get nothing."""
    scheduler = env.scheduler()
    await scheduler.pause()  # not started: nothing leaves the queue by rendering
    a = await scheduler.submit(request(1), JobOwner(1))
    b = await scheduler.submit(request(2), JobOwner(2))
    c = await scheduler.submit(request(3), JobOwner(3))
    d = await scheduler.submit(request(4), JobOwner(1))  # user 1's second job: last
    events = scheduler.subscribe()
    assert await scheduler.cancel(c)
    events.close()
    seen = [e async for e in events]
    assert [type(e) for e in seen] == [JobCancelled, JobQueued]
    moved = seen[1]
    assert isinstance(moved, JobQueued) and (moved.job_id, moved.position) == (d, 3)
    assert [e.job_id for e in scheduler.snapshot()] == [a, b, d]


async def test_caps_give_clear_errors(env: Env) -> None:
    scheduler = env.scheduler(max_queued_per_user=2, max_queued_total=4)
    await scheduler.pause()  # not started: nothing leaves the queue
    await scheduler.submit(request(1), JobOwner(1))
    await scheduler.submit(request(2), JobOwner(1))
    with pytest.raises(QueueFull, match="already have 2 jobs waiting"):
        await scheduler.submit(request(3), JobOwner(1))
    await scheduler.submit(request(3), JobOwner(1), max_queued_per_user=3)  # a guild's own limit
    await scheduler.submit(request(4), JobOwner(2))
    with pytest.raises(QueueFull, match="queue is full"):
        await scheduler.submit(request(5), JobOwner(3))
    assert len(await env.db.jobs.list_active()) == 4


async def test_batches_join_other_users_same_key_and_respect_the_image_cap(env: Env) -> None:
    scheduler = env.scheduler(max_batch=3)
    events = scheduler.subscribe()
    await scheduler.start()
    await scheduler.pause()
    owner = JobOwner
    a1 = await scheduler.submit(request(1), owner(1))
    a2 = await scheduler.submit(request(2), owner(1))  # user 1's second turn: next round
    b1 = await scheduler.submit(request(3, size=72), owner(2))  # another batch key
    c1 = await scheduler.submit(request(4), owner(3))
    d1 = await scheduler.submit(request(5, n=2), owner(4))  # would make 4 images: over the cap
    e1 = await scheduler.submit(request(6), owner(5))
    assert [e.job_id for e in scheduler.snapshot()] == [a1, b1, c1, d1, e1, a2]
    ids = {a1, a2, b1, c1, d1, e1}
    await scheduler.resume()
    await all_final(events, ids)

    started: dict[float, set[int]] = {}
    for job_id in ids:
        job = await env.db.jobs.get(job_id)
        assert job is not None and job.status == "done"
        started.setdefault(job.started_at or 0.0, set()).add(job_id)
    # a2 cannot ride with d1: it is user 1's turn of the next round.
    assert [started[t] for t in sorted(started)] == [{a1, c1, e1}, {b1}, {d1}, {a2}]
    for job_id in ids:
        job = await env.db.jobs.get(job_id)
        assert job is not None
        images = await env.db.images.for_job(job_id)
        assert [im.seed for im in images] == job.request["seeds"]


async def test_many_coroutines_submitting_at_once(env: Env) -> None:
    scheduler = env.scheduler(max_queued_per_user=5, max_queued_total=24)
    events = scheduler.subscribe()
    await scheduler.pause()
    await scheduler.start()

    async def submit(i: int) -> int | None:
        try:
            return await scheduler.submit(request(i, steps=1), JobOwner(i % 6))
        except QueueFull:
            return None

    results = await asyncio.gather(*(submit(i) for i in range(40)))
    ids = {r for r in results if r is not None}
    assert len(ids) == 24  # the total cap binds before the per-user caps (6 users x 5 = 30)
    per_user: dict[int, int] = {}
    for entry in scheduler.snapshot():
        per_user[entry.user_id] = per_user.get(entry.user_id, 0) + 1
    assert max(per_user.values()) <= 5
    assert [e.position for e in scheduler.snapshot()] == list(range(1, 25))
    etas = [e.eta_s for e in scheduler.snapshot()]
    assert etas == sorted(etas)
    await scheduler.resume()
    finals = await all_final(events, ids)
    assert all(isinstance(e, JobDone) for e in finals.values())


async def test_render_errors_fail_the_job_and_never_the_worker(env: Env) -> None:
    scheduler = env.scheduler()
    events = scheduler.subscribe()
    await scheduler.start()
    bad_model = await scheduler.submit(request(1, model="no-such-model"), JobOwner(1))
    gone = await scheduler.submit(
        request(2, kind=Kind.VARIATION, source="0" * 64 + ".png", strength=0.5), JobOwner(2)
    )
    good = await scheduler.submit(request(3), JobOwner(3))
    finals = await all_final(events, {bad_model, gone, good})
    assert finals[bad_model] == JobFailed(bad_model) and finals[gone] == JobFailed(gone)
    assert isinstance(finals[good], JobDone)
    job = await env.db.jobs.get(bad_model)
    assert job is not None and job.status == "failed" and job.error
    assert (await env.db.jobs.get(gone)).error == SOURCE_GONE  # type: ignore[union-attr]


class PoisonEngine:
    """The real tiny engine, except that any call holding a "poison" prompt raises, as a renderer bug
    that one request triggers would."""

    def __init__(self, engine: Any) -> None:
        self.engine = engine

    def render(self, requests: Any, sources: Any = None, **kw: Any) -> Any:
        if any("poison" in r.prompt for r in requests):
            raise RuntimeError("renderer bug")
        return self.engine.render(requests, sources, **kw)

    def safety_checker(self, model: str) -> Any:
        return self.engine.safety_checker(model)

    async def call(self, fn: Any, *args: Any, **kw: Any) -> Any:
        return await self.engine.call(fn, *args, **kw)

    def settle(self) -> None:
        self.engine.settle()


async def test_one_bad_request_in_a_batch_fails_alone(env: Env) -> None:
    """Batches mix users: when a batch fails, each job runs alone, so only the culprit fails."""
    scheduler = Scheduler(env.db, PoisonEngine(env.engine), env.blobs, max_batch=4)
    env.schedulers.append(scheduler)
    events = scheduler.subscribe()
    await scheduler.pause()
    await scheduler.start()
    first = await scheduler.submit(request(1), JobOwner(1))
    bad = await scheduler.submit(request(2, prompt_suffix=" poison"), JobOwner(2))
    last = await scheduler.submit(request(3), JobOwner(3))
    await scheduler.resume()
    finals = await all_final(events, {first, bad, last})
    assert finals[bad] == JobFailed(bad)
    assert (await env.db.jobs.get(bad)).error == UNEXPECTED  # type: ignore[union-attr]
    for job_id, seed in ((first, 1), (last, 3)):
        assert isinstance(finals[job_id], JobDone)
        assert [i.seed for i in await env.db.images.for_job(job_id)] == [seed]
    # The survivors' pixels are those of a solo render of the same request.
    solo = env.engine.render([request(1)])[0][0]
    first_blob = (await env.db.images.for_job(first))[0].blob
    stored = Image.open(env.blobs.path(first_blob)).convert("RGB")
    assert np.array_equal(np.asarray(stored), np.asarray(solo.convert("RGB")))
    assert (await env.db.jobs.get(bad)).attempts == 1  # type: ignore[union-attr]


async def test_variation_and_upscale_start_from_the_stored_image(env: Env) -> None:
    scheduler = env.scheduler()
    events = scheduler.subscribe()
    await scheduler.start()
    parent = await scheduler.submit(request(1), JobOwner(1))
    done = (await all_final(events, {parent}))[parent]
    assert isinstance(done, JobDone)
    source = (await env.db.images.for_job(parent))[0].blob
    vary = await scheduler.submit(
        request(9, kind=Kind.VARIATION, source=source, strength=0.6),
        JobOwner(1),
        parent_job_id=parent,
        parent_index=0,
    )
    up = await scheduler.submit(
        request(1, size=128, kind=Kind.UPSCALE, source=source, strength=0.3),
        JobOwner(1),
        parent_job_id=parent,
        parent_index=0,
    )
    finals = await all_final(events, {vary, up})
    assert isinstance(finals[vary], JobDone) and isinstance(finals[up], JobDone)
    upscaled = (await env.db.images.for_job(up))[0]
    assert (upscaled.width, upscaled.height) == (128, 128)
    child = await env.db.jobs.get(vary)
    assert child is not None and (child.parent_job_id, child.parent_index, child.kind) == (
        parent,
        0,
        "variation",
    )


async def test_start_recovers_abandoned_jobs_and_fails_after_three_attempts(env: Env) -> None:
    first = env.scheduler()
    await first.pause()
    tired = await first.submit(request(1), JobOwner(1))
    fresh = await first.submit(request(2), JobOwner(2))
    # Two jobs left running by workers that died: one on its third attempt, one on its first.
    for attempt in range(3):
        await env.db.jobs.claim([tired], lease_owner=f"dead-{attempt}", lease_seconds=60)
        if attempt < 2:
            await env.db.jobs.requeue([tired], refund_attempt=False)
    await env.db.jobs.claim([fresh], lease_owner="dead", lease_seconds=60)

    second = env.scheduler()
    events = second.subscribe()
    await second.start()
    finals = await all_final(events, {tired, fresh})
    assert isinstance(finals[tired], JobFailed)
    assert "3 times" in ((await env.db.jobs.get(tired)).error or "")  # type: ignore[union-attr]
    assert isinstance(finals[fresh], JobDone)
    job = await env.db.jobs.get(fresh)
    assert job is not None and job.attempts == 2


async def test_a_stop_mid_render_requeues_with_the_attempt_refunded_and_loses_nothing(
        tmp_path: Path, tiny_engine: Any, hold: Any) -> None:
    """Stop the scheduler (as SIGTERM does) while a batch is held mid-render, close the database and
    reopen it: the held jobs are queued again with their attempt refunded (a shutdown is not their
    fault), and a new scheduler completes every job, each with its images recorded once.
    (Delivered once, through the real bot delivery: tests/bot/test_process.py.)"""
    blobs = BlobStore(tmp_path / "images")
    db = await Database.open(tmp_path / "atelier.db")
    scheduler = Scheduler(db, tiny_engine, blobs)
    events = scheduler.subscribe()
    await scheduler.start()
    ids = [await scheduler.submit(request(i, n=2), JobOwner(i % 3)) for i in range(6)]
    await until(events, lambda e: isinstance(e, JobDone))
    hold.close()  # whichever batch renders next waits at a step boundary
    assert await asyncio.to_thread(hold.holding.wait, WAIT_S)
    held = [e.job_id for e in scheduler.snapshot() if e.status == "running"]
    assert held
    await scheduler.stop()
    jobs = {j: await db.jobs.get(j) for j in ids}
    await db.close()
    hold.open()
    for job_id in held:
        job = jobs[job_id]
        assert job is not None and (job.status, job.attempts) == ("queued", 0), job
    assert {j.status for j in jobs.values() if j is not None} <= {"queued", "done"}

    db = await Database.open(tmp_path / "atelier.db")
    try:
        scheduler = Scheduler(db, tiny_engine, blobs)
        events = scheduler.subscribe()
        await scheduler.start()
        pending = {j for j, row in jobs.items() if row is not None and row.status == "queued"}
        finals = await all_final(events, pending)
        await scheduler.stop()
        assert all(isinstance(e, JobDone) for e in finals.values())
        for job_id in ids:
            job = await db.jobs.get(job_id)
            assert job is not None and job.status == "done" and job.attempts == 1, job
            assert [im.index for im in await db.images.for_job(job_id)] == [0, 1]
    finally:
        await db.close()


async def test_eta_is_rebuilt_from_the_table_and_streams_close(env: Env) -> None:
    first = env.scheduler()
    events = first.subscribe()
    await first.start()
    done_id = await first.submit(request(1, n=2), JobOwner(1))
    await all_final(events, {done_id})
    await first.stop()
    events.close()
    assert [e async for e in events] == []  # a closed stream ends its iteration
    job = await env.db.jobs.get(done_id)
    assert job is not None and job.render_seconds is not None

    # A new scheduler learns render time per batch key from the jobs table, not from memory.
    second = env.scheduler()
    await second.start()
    await second.pause()
    waiting = await second.submit(request(5, n=4), JobOwner(2))
    position = second.position(waiting)
    assert position is not None
    assert position == (1, round(job.render_seconds / 2 * 4, 1))


async def test_cancel_all_purges_one_users_jobs(env: Env) -> None:
    scheduler = env.scheduler()
    await scheduler.pause()
    mine = [await scheduler.submit(request(i), JobOwner(5, 9)) for i in range(3)]
    other = await scheduler.submit(request(9), JobOwner(6, 9))
    assert await scheduler.cancel_all(user_id=5) == 3
    assert [e.job_id for e in scheduler.snapshot()] == [other]
    for job_id in mine:
        job = await env.db.jobs.get(job_id)
        assert job is not None and job.status == "cancelled"
    assert await scheduler.cancel_all(guild_id=9) == 1
    assert scheduler.snapshot() == []
