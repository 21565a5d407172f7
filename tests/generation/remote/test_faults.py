"""Faults around remote renders (issue 12, tests 3 and 4): the broker killed and restarted mid-render, a
broker that lost its whole store, and the bot itself SIGKILLed mid-render. Real nats-server, real
`atelier worker` subprocesses held mid-render by their hold file, the sandbox bot; each job's result
must reach its member exactly once."""

from __future__ import annotations

import asyncio
import functools
import os
import shutil
import signal
import sys
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import nats

from bot.app import App
from generation.engine import HOLD_FILE_ENV
from generation.remote.wire import Subjects, decode_worker
from sandbox import Sandbox
from storage.db import Database
from tests.bot.conftest import sandbox_env
from tests.bot.helpers import button, job_id_of, result_for, results, shows_rendering
from tests.generation.remote.conftest import (
    BOT_PASS,
    BOT_USER,
    NatsServer,
    WorkerProcesses,
    job_status,
    wait_status,
)

PATIENCE_S = 240.0  # a bound on subprocess start-up and CPU renders, not a timing assertion
CATALOG = '[{"name": "tiny", "family": "sd15", "steps": 3, "guidance": 5.0, "sampler": "euler"}]'


async def announced(server: NatsServer, prefix: str, name: str) -> None:
    """Wait until the worker `name` is in the registry (it announces itself after its warm-up render)."""
    nc = await nats.connect(server.url(BOT_USER, BOT_PASS))
    try:
        js = nc.jetstream()
        for _ in range(int(PATIENCE_S * 10)):
            try:
                kv = await js.key_value(Subjects(prefix).workers_bucket)
                decode_worker((await kv.get(name)).value or b"")
                return
            except Exception:
                await asyncio.sleep(0.1)
    finally:
        await nc.close()
    raise AssertionError(f"worker {name} never announced itself")


def shown_once(sandbox: Sandbox, channel: Any, job_id: int) -> bool:
    return len([m for m in results(sandbox, channel) if job_id_of(m) == job_id]) == 1


async def test_broker_killed_then_wiped_mid_render_each_job_done_once(
    sandbox: Sandbox, workers: WorkerProcesses, start_bot: Callable[..., Any], spare_nats: NatsServer,
    tmp_path: Path
) -> None:
    prefix = f"w{uuid.uuid4().hex[:8]}"
    hold = tmp_path / "hold"
    spare_nats.start()
    w1 = workers.start("w1", prefix, "--models", "tiny", url=spare_nats.url("worker", "worker-secret"),
                       extra_env={HOLD_FILE_ENV: str(hold)})
    app: App = await start_bot(own_engine=True, ATELIER_BROKER_URL=spare_nats.url(BOT_USER, BOT_PASS),
                               ATELIER_BROKER_PREFIX=prefix)
    services = app.services
    assert services is not None and services.remote is not None
    remote = services.remote
    await sandbox.wait_for(lambda: "w1" in remote.workers, timeout=PATIENCE_S)
    alice, general = sandbox.users["alice"], sandbox.channel("general")

    # 1. SIGKILL and restart nats-server (its store intact) while w1 renders: done once, one attempt.
    hold.touch()
    first = await sandbox.slash(alice, general, "imagine", {"prompt": "a lantern --seed 1 --steps 3 --n 1"})
    await first.wait_ack()
    await sandbox.wait_for(lambda: shows_rendering(first) and remote.workers["w1"].busy, timeout=PATIENCE_S)
    job_a = remote.workers["w1"].busy[0]
    spare_nats.kill()
    spare_nats.start()
    await sandbox.wait_for(lambda: remote.connected and "w1" in remote.workers, timeout=PATIENCE_S)
    hold.unlink()
    await sandbox.wait_for(lambda: result_for(sandbox, general, job_a), timeout=PATIENCE_S)
    row = await services.db.jobs.get(job_a)
    assert row is not None and row.status == "done" and row.attempts == 1

    # 2. The broker loses its whole store while w1 holds a batch, and w1 dies: nothing anywhere says the
    # job exists but SQLite. The watchdog requeues it (attempt refunded) and a new worker renders it.
    hold.touch()
    second = await sandbox.slash(alice, general, "imagine", {"prompt": "a comet --seed 2 --steps 3 --n 1"})
    await second.wait_ack()
    # (w1's registry entry may list job A for a heartbeat more.)
    await sandbox.wait_for(lambda: shows_rendering(second) and remote.workers["w1"].busy
                           and remote.workers["w1"].busy[0] != job_a, timeout=PATIENCE_S)
    job_b = remote.workers["w1"].busy[0]
    w1.send_signal(signal.SIGKILL)
    w1.wait()
    spare_nats.kill()
    shutil.rmtree(spare_nats.store)
    spare_nats.start()
    hold.unlink()
    workers.start("w2", prefix, "--models", "tiny", url=spare_nats.url("worker", "worker-secret"))
    message = await sandbox.wait_for(lambda: result_for(sandbox, general, job_b), timeout=PATIENCE_S)
    assert message.id == second.original.id
    row = await services.db.jobs.get(job_b)
    assert row is not None and row.status == "done" and row.attempts == 1
    assert shown_once(sandbox, general, job_a) and shown_once(sandbox, general, job_b)
    assert len(await services.db.images.for_job(job_b)) == 1


async def start_bot_process(sandbox: Sandbox, data_dir: Path, log: Path, env: dict[str, str]
                            ) -> asyncio.subprocess.Process:
    handle = log.open("ab")
    return await asyncio.create_subprocess_exec(
        sys.executable, "-m", "bot.cli", "run", env={**os.environ, **sandbox_env(sandbox, data_dir), **env},
        stdout=handle, stderr=handle, cwd=str(data_dir.parent))


async def test_bot_sigkilled_mid_render_adopts_the_job_and_delivers_it_once(
    sandbox: Sandbox, workers: WorkerProcesses, nats_server: NatsServer, tmp_path: Path
) -> None:
    prefix = f"s{uuid.uuid4().hex[:8]}"
    hold = tmp_path / "hold"
    data_dir, log = tmp_path / "data", tmp_path / "bot.log"
    data_dir.mkdir()
    (data_dir / "remote-models.json").write_text(CATALOG)  # /imagine is accepted before w1 is up
    env = {"ATELIER_BROKER_URL": nats_server.url(BOT_USER, BOT_PASS), "ATELIER_BROKER_PREFIX": prefix}
    workers.start("w1", prefix, "--models", "tiny", extra_env={HOLD_FILE_ENV: str(hold)})
    bot = await start_bot_process(sandbox, data_dir, log, env)
    try:
        await sandbox.wait_until_ready(timeout=PATIENCE_S)
        await announced(nats_server, prefix, "w1")
        hold.touch()  # after w1's warm-up render
        alice, general = sandbox.users["alice"], sandbox.channel("general")
        interaction = await sandbox.slash(alice, general, "imagine",
                                          {"prompt": "a glacier --seed 3 --steps 3 --n 1"})
        assert await interaction.wait_ack(timeout=30) == 4
        await sandbox.wait_for(lambda: shows_rendering(interaction), timeout=PATIENCE_S)
        bot.send_signal(signal.SIGKILL)
        await bot.wait()

        bot = await start_bot_process(sandbox, data_dir, log, env)
        await sandbox.wait_until_ready(timeout=PATIENCE_S)
        hold.unlink()
        message = await sandbox.wait_for(lambda: results(sandbox, general) and results(sandbox, general)[0],
                                         timeout=PATIENCE_S)
        assert message.id == interaction.original.id
        job_id = job_id_of(message)
        db = await Database.open(data_dir / "atelier.db")
        try:
            # Adopted, not abandoned: the render w1 was doing is the one delivered (no second attempt).
            job = await db.jobs.get(job_id)
            assert job is not None and job.status == "done" and job.attempts == 1
            assert job.delivered_at is not None
        finally:
            await db.close()
        assert shown_once(sandbox, general, job_id)
    finally:
        if bot.returncode is None:
            bot.send_signal(signal.SIGTERM)
            await asyncio.wait_for(bot.wait(), 60)



async def test_a_job_adopted_at_start_is_listed_cancellable_and_holds_its_slot(
    sandbox: Sandbox, workers: WorkerProcesses, nats_server: NatsServer, tmp_path: Path
) -> None:
    prefix = f"a{uuid.uuid4().hex[:8]}"
    hold = tmp_path / "hold"
    data_dir, log = tmp_path / "data", tmp_path / "bot.log"
    data_dir.mkdir()
    (data_dir / "remote-models.json").write_text(CATALOG)
    env = {"ATELIER_BROKER_URL": nats_server.url(BOT_USER, BOT_PASS), "ATELIER_BROKER_PREFIX": prefix}
    # One slot: while the adopted job holds it, nothing else may be dispatched to w1.
    workers.start("w1", prefix, "--models", "tiny", "--slots", "1", extra_env={HOLD_FILE_ENV: str(hold)})
    bot = await start_bot_process(sandbox, data_dir, log, env)
    db = await Database.open(data_dir / "atelier.db")

    status = functools.partial(job_status, db)
    until = functools.partial(wait_status, db)

    try:
        await sandbox.wait_until_ready(timeout=PATIENCE_S)
        await announced(nats_server, prefix, "w1")
        hold.touch()
        alice, bob, general = sandbox.users["alice"], sandbox.users["bob"], sandbox.channel("general")
        first = await sandbox.slash(alice, general, "imagine",
                                    {"prompt": "an orchard --seed 8 --steps 3 --n 1"})
        assert await first.wait_ack(timeout=30) == 4
        await sandbox.wait_for(lambda: shows_rendering(first), timeout=PATIENCE_S)
        bot.send_signal(signal.SIGKILL)
        await bot.wait()
        adopted = max(row.id for row in await db.jobs.list_active())

        sandbox.gateway.ready.clear()  # ready again once the new process has identified
        bot = await start_bot_process(sandbox, data_dir, log, env)
        await sandbox.wait_until_ready(timeout=PATIENCE_S)
        # The adopted job is in its member's /queue, rendering.
        line = next(x for x in (await _queue(sandbox, alice, general)).content.splitlines()
                    if f"`{adopted}`" in x)
        assert "rendering" in line
        # It holds w1's only slot: bob's job is queued, not dispatched, while it renders.
        second = await sandbox.slash(bob, general, "imagine", {"prompt": "a vineyard --seed 9 --steps 3 --n 1"
                                                              })
        await second.wait_ack()
        later = max(row.id for row in await db.jobs.list_active())
        assert later != adopted
        assert f"`{later}`" in (await _queue(sandbox, bob, general)).content
        assert await status(later) == "queued" and await status(adopted) == "running"

        # Its member cancels it from /queue: the worker stops it (held at a step), the slot frees.
        listing = await _queue(sandbox, alice, general)
        click = await sandbox.click(alice, listing, button(listing, f"Cancel {adopted}"))
        await click.wait_ack()
        await until(adopted, "cancelled")
        hold.unlink()
        await until(later, "done")
        row = await db.jobs.get(later)
        assert row is not None and row.attempts == 1
        assert await sandbox.wait_for(lambda: result_for(sandbox, general, later), timeout=PATIENCE_S)
        assert result_for(sandbox, general, adopted) is None
    finally:
        await db.close()
        if bot.returncode is None:
            bot.send_signal(signal.SIGTERM)
            await asyncio.wait_for(bot.wait(), 60)


async def _queue(sandbox: Sandbox, user: Any, channel: Any) -> Any:
    listing = await sandbox.slash(user, channel, "queue")
    await listing.wait_ack()
    return listing.original
