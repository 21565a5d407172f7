"""`atelier run` as a real process, killed with SIGKILL mid-queue and started again: every job's result
reaches its channel, none twice. Renders are held mid-job by the engine's hold file (StepGate), never by
hoping they are slow."""

from __future__ import annotations

import asyncio
import os
import signal
import sys
from pathlib import Path
from typing import Any

from generation.engine import HOLD_FILE_ENV
from generation.worker import STORE_HOLD_FILE_ENV
from sandbox import Sandbox
from storage.db import Database
from tests.bot.conftest import sandbox_env
from tests.bot.helpers import fast_grid, imagine, job_id_of, results, shows_rendering


async def start_process(sandbox: Sandbox, data_dir: Path, log: Path) -> asyncio.subprocess.Process:
    env = {**os.environ, **sandbox_env(sandbox, data_dir), "ATELIER_MAX_BATCH": "1", "HF_HUB_OFFLINE": "1",
           HOLD_FILE_ENV: str(data_dir.parent / "hold"),  # renders wait while this file exists
           # and batches wait between their fast grid (shown) and their files (stored) while this one does
           STORE_HOLD_FILE_ENV: str(data_dir.parent / "store-hold")}
    handle = log.open("ab")
    return await asyncio.create_subprocess_exec(
        sys.executable, "-m", "bot.cli", "run", env=env, stdout=handle, stderr=handle,
        cwd=str(data_dir.parent),
    )


async def test_sigkill_mid_queue_then_restart_delivers_each_job_once(sandbox: Sandbox,
                                                                     tmp_path: Path) -> None:
    alice, bob, general = sandbox.users["alice"], sandbox.users["bob"], sandbox.channel("general")
    data_dir, log, hold = tmp_path / "data", tmp_path / "bot.log", tmp_path / "hold"
    proc = await start_process(sandbox, data_dir, log)
    try:
        # Commands sync before the gateway connects; an interaction sent before the bot's session is
        # up would go nowhere (as on Discord), so wait for the session.
        await sandbox.wait_until_ready(timeout=120)
        assert any(c["name"] == "imagine" for c in sandbox.commands(sandbox.guild))
        hold.touch()  # after the warm-up render, which would wait too
        interactions = []
        for user, prompt in [(alice, "first --steps 3 --seed 1"), (bob, "second --steps 3 --seed 2"),
                             (alice, "third --steps 3 --seed 3")]:
            it = await sandbox.slash(user, general, "imagine", {"prompt": prompt})
            assert await it.wait_ack(timeout=30) == 4
            interactions.append(it)

        def rendering() -> Any:
            return any(shows_rendering(it) for it in interactions)

        await sandbox.wait_for(rendering, timeout=120)
        proc.send_signal(signal.SIGKILL)
        await proc.wait()
        assert results(sandbox, general) == []  # killed while the first job was held mid-render

        hold.unlink()
        proc = await start_process(sandbox, data_dir, log)
        await sandbox.wait_for(lambda: len(results(sandbox, general)) >= 3, timeout=240)
        await asyncio.sleep(2)  # anything delivered twice would show up now
        shown = [job_id_of(m) for m in results(sandbox, general)]
        assert len(shown) == 3 and len(set(shown)) == 3, shown
        # Each result replaced its own "queued" message.
        assert {m.id for m in results(sandbox, general)} == {it.original.id for it in interactions}

        # SIGTERM while a job is held mid-render: a clean exit, the job goes back to the queue with its
        # attempt refunded (a shutdown is not the job's fault), and the next start delivers it.
        hold.touch()
        last = await sandbox.slash(bob, general, "imagine", {"prompt": "fourth --steps 3 --seed 4"})
        await last.wait_ack(timeout=30)
        await sandbox.wait_for(lambda: shows_rendering(last), timeout=120)
        proc.send_signal(signal.SIGTERM)
        assert await asyncio.wait_for(proc.wait(), 60) == 0
        db = await Database.open(data_dir / "atelier.db")
        try:
            [job] = [j for j in await db.jobs.list_for_user(bob.id, limit=10)
                     if "fourth" in j.request["prompt"]]
            assert (job.status, job.attempts, job.delivered_at) == ("queued", 0, None), job
        finally:
            await db.close()
        hold.unlink()
        proc = await start_process(sandbox, data_dir, log)
        await sandbox.wait_for(lambda: len(results(sandbox, general)) == 4, timeout=240)
        await asyncio.sleep(1)
        assert len({job_id_of(m) for m in results(sandbox, general)}) == len(results(sandbox, general)) == 4
    finally:
        if proc.returncode is None:
            proc.send_signal(signal.SIGTERM)
            try:
                await asyncio.wait_for(proc.wait(), 30)
            except TimeoutError:
                proc.kill()
                await proc.wait()
        print(log.read_text()[-4000:] if log.exists() else "")


async def test_sigkill_after_the_fast_grid_before_the_files_neither_loses_nor_repeats_the_job(
        sandbox: Sandbox, tmp_path: Path) -> None:
    """The member saw the grid, then the bot died before the PNGs were stored: the job was never done,
    so the restarted bot renders it again and delivers it once, on the same message, with its files."""
    alice, general = sandbox.users["alice"], sandbox.channel("general")
    data_dir, log, store_hold = tmp_path / "data", tmp_path / "bot.log", tmp_path / "store-hold"
    store_hold.touch()
    proc = await start_process(sandbox, data_dir, log)
    try:
        await sandbox.wait_until_ready(timeout=120)
        interaction = await sandbox.slash(alice, general, "imagine",
                                          {"prompt": "a kite --n 2 --steps 2 --seed 9"})
        assert await interaction.wait_ack(timeout=30) == 4
        shown = await sandbox.wait_for(lambda: fast_grid(interaction), timeout=120)
        job_id = job_id_of(shown)
        proc.send_signal(signal.SIGKILL)
        await proc.wait()
        assert results(sandbox, general) == []
        db = await Database.open(data_dir / "atelier.db")
        try:
            job = await db.jobs.get(job_id)
            assert job is not None and job.status == "running" and await db.images.for_job(job_id) == []
        finally:
            await db.close()

        store_hold.unlink()
        proc = await start_process(sandbox, data_dir, log)
        await sandbox.wait_for(lambda: results(sandbox, general), timeout=240)
        await asyncio.sleep(2)  # anything delivered twice would show up now
        [final] = results(sandbox, general)
        assert (final.id, job_id_of(final)) == (shown.id, job_id)
        assert final.attachments[0].filename == f"atelier_{job_id}.png"
        proc.send_signal(signal.SIGTERM)
        assert await asyncio.wait_for(proc.wait(), 60) == 0
        db = await Database.open(data_dir / "atelier.db")
        try:
            job = await db.jobs.get(job_id)
            assert job is not None and job.status == "done" and job.delivered_at is not None
            assert len(await db.images.for_job(job_id)) == 2
        finally:
            await db.close()
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
        print(log.read_text()[-4000:] if log.exists() else "")


async def test_a_second_bot_on_the_same_data_dir_is_refused(sandbox: Sandbox, bot: Any,
                                                            tmp_path: Path) -> None:
    """Two bots on one database would take up each other's running jobs: the second one exits with a
    clear message, touching nothing, and the first one keeps working."""
    env = {**os.environ, **sandbox_env(sandbox, tmp_path / "data"), "HF_HUB_OFFLINE": "1"}
    second = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "bot.cli", "run", env=env, stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE)
    _, err = await asyncio.wait_for(second.communicate(), 120)
    assert second.returncode == 2
    assert f"error: another Atelier process (pid {os.getpid()}) is using" in err.decode()
    assert "Traceback" not in err.decode()

    alice, general = sandbox.users["alice"], sandbox.channel("general")
    result = await imagine(sandbox, alice, general, "still here --steps 2 --n 1", timeout=60)
    assert "still here" in result.content
