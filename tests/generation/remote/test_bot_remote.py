"""The bot in remote mode (ATELIER_BROKER_URL) through the sandbox: it loads no model, its catalog comes
from the workers' announcements, and real `atelier worker` subprocesses render what members ask for."""

from __future__ import annotations

import asyncio
import contextlib
import io
import signal
import subprocess
import sys
import uuid
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import nats
import numpy as np
import pytest
from PIL import Image

from bot.app import App
from generation.remote.wire import (
    CHUNK_HEADER,
    PROTOCOL,
    Dispatch,
    Event,
    ImageRef,
    ModelInfo,
    Subjects,
    WorkerInfo,
    chunk_header,
    decode_dispatch,
    encode,
    sha256_hex,
)
from generation.request import RenderRequest
from generation.worker import STORE_HOLD_FILE_ENV
from sandbox import Sandbox
from tests.bot.helpers import (
    click_for_result,
    fast_grid,
    image_of,
    imagine,
    job_id_of,
    labels,
    result_for,
    results,
    shows_rendering,
)
from tests.bot.test_metrics import free_port, scrape
from tests.generation.remote.conftest import (
    BOT_PASS,
    BOT_USER,
    WORKER_PASS,
    WORKER_USER,
    NatsServer,
    WorkerProcesses,
)

PATIENCE_S = 240.0  # a bound on subprocess start-up and CPU renders, not a timing assertion


@pytest.fixture
def remote_bot(start_bot: Callable[..., Any], nats_server: NatsServer) -> Callable[..., Any]:
    """Start the bot in remote mode (no engine of its own: ATELIER_BROKER_URL) under `prefix`."""

    async def start(prefix: str, **extra: str) -> App:
        app: App = await start_bot(own_engine=True, ATELIER_BROKER_URL=nats_server.url(BOT_USER, BOT_PASS),
                                   ATELIER_BROKER_PREFIX=prefix, **extra)
        return app

    return start


async def test_imagine_through_two_workers(
    sandbox: Sandbox, workers: WorkerProcesses, remote_bot: Callable[..., Any]
) -> None:
    prefix = f"b{uuid.uuid4().hex[:8]}"
    workers.start("w1", prefix, "--models", "tiny")
    workers.start("w2", prefix, "--models", "tiny")
    port = free_port()
    app = await remote_bot(prefix, ATELIER_METRICS_ADDR=f"127.0.0.1:{port}")
    services = app.services
    assert services is not None and services.engine is None  # no model in the bot
    await sandbox.wait_for(lambda: services.remote is not None and len(services.remote.workers) == 2,
                           timeout=PATIENCE_S)
    assert services.registry.names() == ["tiny"]
    for _ in range(100):  # the exporter refreshes its gauges every few seconds
        if (await scrape(port)).get(("atelier_workers", (("state", "idle"),))) == 2:
            break
        await asyncio.sleep(0.1)
    assert (await scrape(port))[("atelier_workers", (("state", "idle"),))] == 2

    alice, general = sandbox.users["alice"], sandbox.channel("general")
    message = await imagine(sandbox, alice, general, "a lighthouse at dusk --seed 7 --steps 3", count=4,
                            timeout=PATIENCE_S)
    job = await services.db.jobs.get(job_id_of(message))
    assert job is not None and job.status == "done" and job.attempts == 1
    width, height = job.request["width"], job.request["height"]
    assert image_of(message).size == (2 * width, 2 * height)  # the grid the bot built
    assert labels(message)[:5] == ["U1", "U2", "U3", "U4", "🔄"]
    # The stored images are the workers' PNGs, checked and kept by the bot.
    rows = await services.db.images.for_job(job.id)
    assert [r.seed for r in rows] == [7, 8, 9, 10]
    assert all(services.blobs.exists(r.blob) for r in rows)
    # The workers' images, counted by the exporter (the grid the bot built is not a result).
    stored = sum(services.blobs.path(r.blob).stat().st_size for r in rows)
    for _ in range(100):
        if (await scrape(port)).get(("atelier_result_bytes_total", ())) == stored:
            break
        await asyncio.sleep(0.1)
    assert (await scrape(port))[("atelier_result_bytes_total", ())] == stored

    # U1: an upscale starts from the bot's stored image, which travels to a worker through the broker.
    upscaled = await click_for_result(sandbox, alice, general, message, "U1", timeout=PATIENCE_S)
    assert image_of(upscaled).size == (2 * width, 2 * height)


async def test_a_worker_killed_mid_render_hands_the_job_to_another(
    sandbox: Sandbox, workers: WorkerProcesses, remote_bot: Callable[..., Any], tmp_path: Path
) -> None:
    prefix = f"k{uuid.uuid4().hex[:8]}"
    hold = tmp_path / "hold"  # while it exists, w1's renders wait at the end of a step
    w1 = workers.start("w1", prefix, "--models", "tiny", "--ack-wait", "3",
                       extra_env={"ATELIER_TEST_HOLD_FILE": str(hold)})
    app = await remote_bot(prefix)
    services = app.services
    assert services is not None and services.remote is not None
    remote = services.remote
    await sandbox.wait_for(lambda: "w1" in remote.workers, timeout=PATIENCE_S)
    hold.touch()  # after its warm-up render

    alice, general = sandbox.users["alice"], sandbox.channel("general")
    interaction = await sandbox.slash(alice, general, "imagine",
                                      {"prompt": "a stormy sea --seed 3 --steps 3"})
    await interaction.wait_ack()
    # Held on w1 and shown as rendering to the member.
    await sandbox.wait_for(lambda: shows_rendering(interaction) and remote.workers["w1"].busy,
                           timeout=PATIENCE_S)
    job_id = remote.workers["w1"].busy[0]

    w1.send_signal(signal.SIGKILL)
    w1.wait()
    workers.start("w2", prefix, "--models", "tiny", "--ack-wait", "3")
    message = await sandbox.wait_for(lambda: result_for(sandbox, general, job_id), timeout=PATIENCE_S)
    assert message.id == interaction.original.id
    job = await services.db.jobs.get(job_id)
    assert job is not None and job.status == "done" and job.attempts == 2
    assert len([m for m in results(sandbox, general) if job_id_of(m) == job_id]) == 1  # one final message
    rows = await services.db.images.for_job(job_id)
    assert sorted(r.index for r in rows) == list(range(len(job.request["seeds"])))  # stored once


class FakeWorker:
    """The test plays a worker over the real broker, one delivery at a time, so it can send back a
    damaged result on purpose."""

    def __init__(self, js: Any, subjects: Subjects) -> None:
        self.js, self.subjects = js, subjects

    async def announce(self) -> None:
        kv = await self.js.key_value(self.subjects.workers_bucket)
        await kv.put("fake", encode(WorkerInfo(
            name="fake", device="cpu", slots=2, max_batch=4,
            models=(ModelInfo(name="tiny", family="sd15", steps=3, guidance=5.0, sampler="euler"),))))

    async def serve_one(self, damage: str) -> int:
        """Take the next batch of one job and send back its image: good, or damaged as `damage` says."""
        msg, dispatch = await self.take()
        return await self.answer(msg, dispatch, damage)

    async def take(self) -> tuple[Any, Dispatch]:
        sub = await self.js.pull_subscribe(self.subjects.jobs("tiny"), durable=self.subjects.consumer("tiny"),
                                           stream=self.subjects.jobs_stream)
        msg = (await sub.fetch(1, timeout=PATIENCE_S))[0]
        await sub.unsubscribe()
        return msg, decode_dispatch(msg.data)

    async def answer(self, msg: Any, dispatch: Dispatch, damage: str) -> int:
        job = dispatch.jobs[0]
        request = RenderRequest.from_json(job.request)
        side = (request.width // 2 if damage == "dimensions" else request.width, request.height)
        png = io.BytesIO()
        # A colour of its own: the blobs stream keeps earlier images, and a "missing" one must be missing.
        Image.new("RGB", side, tuple(uuid.uuid4().bytes[:3])).save(png, format="PNG")
        data = png.getvalue()
        # "hash": announced under a hash that is not its bytes'; "missing": never uploaded.
        digest = sha256_hex(b"some other image" if damage == "hash" else data)
        if damage != "missing":
            await self.js.publish(f"{self.subjects.blob(digest)}.0", data,
                                  headers={CHUNK_HEADER: chunk_header(0, 1)})
        ref = ImageRef(index=0, seed=request.seeds[0], width=side[0], height=side[1], sha256=digest,
                       size=len(data))
        await self.js.publish(self.subjects.events(job.job_id), encode(Event(
            kind="done", job_id=job.job_id, dispatch_id=dispatch.dispatch_id, worker="fake", images=(ref,))))
        await msg.ack()
        return job.job_id


@contextlib.asynccontextmanager
async def fake_worker_bot(sandbox: Sandbox, nats_server: NatsServer, remote_bot: Callable[..., Any],
                          letter: str) -> AsyncIterator[tuple[Any, FakeWorker]]:
    """A remote-mode bot on its own prefix and the test's FakeWorker announced to it: (services, fake)."""
    subjects = Subjects(f"{letter}{uuid.uuid4().hex[:8]}")
    app = await remote_bot(subjects.prefix)
    services = app.services
    assert services is not None
    nc = await nats.connect(nats_server.url(WORKER_USER, WORKER_PASS))
    try:
        fake = FakeWorker(nc.jetstream(), subjects)
        await fake.announce()
        await sandbox.wait_for(lambda: services.registry.names() == ["tiny"], timeout=PATIENCE_S)
        yield services, fake
    finally:
        await nc.close()


async def test_a_damaged_image_is_a_failed_attempt_retried_then_a_clear_message(
    sandbox: Sandbox, nats_server: NatsServer, remote_bot: Callable[..., Any]
) -> None:
    async with fake_worker_bot(sandbox, nats_server, remote_bot, "h") as (services, fake):
        alice, general = sandbox.users["alice"], sandbox.channel("general")

        # A wrong hash, then a good image: the job is done at its second attempt, the member sees it once.
        first = await sandbox.slash(alice, general, "imagine", {"prompt": "a quiet pond --seed 4 --n 1"})
        await first.wait_ack()
        job_a = await fake.serve_one("hash")
        assert await fake.serve_one("good") == job_a
        message = await sandbox.wait_for(lambda: result_for(sandbox, general, job_a), timeout=PATIENCE_S)
        assert message.id == first.original.id
        row = await services.db.jobs.get(job_a)
        assert row is not None and row.status == "done" and row.attempts == 2
        assert len(await services.db.images.for_job(job_a)) == 1

        # Damaged at every attempt (a wrong hash, a missing blob, the wrong size): a clear message after
        # the last one, and nothing shown or stored.
        second = await sandbox.slash(alice, general, "imagine", {"prompt": "a still lake --seed 5 --n 1"})
        await second.wait_ack()
        job_b = await fake.serve_one("hash")
        assert await fake.serve_one("missing") == job_b
        assert await fake.serve_one("dimensions") == job_b
        shown = await sandbox.wait_for(
            lambda: second.original is not None and "arrived damaged" in second.original.content
            and second.original, timeout=PATIENCE_S)
        assert not shown.attachments
        row = await services.db.jobs.get(job_b)
        assert row is not None and row.status == "failed" and row.attempts == 3
        assert await services.db.images.for_job(job_b) == []


async def test_malformed_stray_and_stale_events_are_terminated_and_the_job_completes(
    sandbox: Sandbox, nats_server: NatsServer, remote_bot: Callable[..., Any],
    caplog: pytest.LogCaptureFixture,
) -> None:
    subjects = Subjects(f"m{uuid.uuid4().hex[:8]}")
    app = await remote_bot(subjects.prefix)
    services = app.services
    assert services is not None
    nc = await nats.connect(nats_server.url(WORKER_USER, WORKER_PASS))
    try:
        js = nc.jetstream()
        fake = FakeWorker(js, subjects)
        await fake.announce()
        await sandbox.wait_for(lambda: services.registry.names() == ["tiny"], timeout=PATIENCE_S)
        alice, general = sandbox.users["alice"], sandbox.channel("general")
        interaction = await sandbox.slash(alice, general, "imagine", {"prompt": "a kite --seed 6 --n 1"})
        await interaction.wait_ack()
        msg, dispatch = await fake.take()
        job_id = dispatch.jobs[0].job_id

        def event(**fields: Any) -> bytes:
            return encode(Event(**{"kind": "failed", "job_id": job_id, "dispatch_id": dispatch.dispatch_id,
                                   "worker": "fake", "reason": "forged", **fields}))

        stray = 900_000 + job_id
        forged = [
            (job_id, b"{not json"),
            (job_id, event().replace(f'"v":{PROTOCOL}'.encode(), f'"v":{PROTOCOL + 1}'.encode())),
            (stray, event(job_id=stray)),  # a job no batch in flight holds
            (job_id, event(dispatch_id="0" * 32)),  # an earlier dispatch of this job: stale
            (stray, event()),  # this job's event on another job's subject
        ]
        caplog.set_level("WARNING", logger="generation.remote.dispatcher")
        for subject_job, body in forged:
            await js.publish(subjects.events(subject_job), body)
        # Every forged event was answered (terminated) before the real result is sent.
        await sandbox.wait_for(lambda: len([r for r in caplog.records if "terminated" in r.getMessage()])
                               >= len(forged), timeout=PATIENCE_S)
        logged = [r.getMessage() for r in caplog.records if "terminated" in r.getMessage()]
        assert any("malformed event" in line and f"events.{job_id}" in line for line in logged)
        assert any(f"protocol {PROTOCOL + 1}" in line and f"events.{job_id}" in line for line in logged)
        assert any(f"job {stray} from worker fake" in line and "no batch in flight" in line
                   for line in logged)
        assert any(f"job {job_id} from worker fake" in line and "stale dispatch" in line for line in logged)
        assert any(f"events.{stray}" in line and "another job's subject" in line for line in logged)
        row = await services.db.jobs.get(job_id)
        assert row is not None and row.status == "running"  # nothing forged ended it

        # The real result still completes the job, once.
        assert await fake.answer(msg, dispatch, "good") == job_id
        message = await sandbox.wait_for(lambda: result_for(sandbox, general, job_id), timeout=PATIENCE_S)
        assert message.id == interaction.original.id
        row = await services.db.jobs.get(job_id)
        assert row is not None and row.status == "done" and row.attempts == 1
        assert len(await services.db.images.for_job(job_id)) == 1
        assert await services.db.jobs.get(stray) is None
    finally:
        await nc.close()


async def test_a_remote_result_shows_its_grid_first_then_the_stored_files(
    sandbox: Sandbox, nats_server: NatsServer, remote_bot: Callable[..., Any], tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    hold = tmp_path / "store-hold"  # holds the bot between the fast grid and its SQLite writes
    hold.touch()
    monkeypatch.setenv(STORE_HOLD_FILE_ENV, str(hold))  # read when the bot's runner is made
    async with fake_worker_bot(sandbox, nats_server, remote_bot, "g") as (services, fake):
        alice, general = sandbox.users["alice"], sandbox.channel("general")
        interaction = await sandbox.slash(alice, general, "imagine", {"prompt": "a red barn --seed 2 --n 1"})
        await interaction.wait_ack()
        job_id = await fake.serve_one("good")
        shown = await sandbox.wait_for(lambda: fast_grid(interaction), timeout=PATIENCE_S)
        assert shown.id == interaction.original.id and not shown.buttons()
        row = await services.db.jobs.get(job_id)
        assert row is not None and row.status == "running"  # nothing stored yet

        hold.unlink()
        message = await sandbox.wait_for(lambda: result_for(sandbox, general, job_id), timeout=PATIENCE_S)
        assert message.id == interaction.original.id and message.attachments[0].filename.endswith(".png")
        stored = await services.db.images.for_job(job_id)
        assert len(stored) == 1
        # The JPEG shown first is the worker's image (a solid colour: within JPEG's error).
        png = np.asarray(Image.open(services.blobs.path(stored[0].blob)).convert("RGB"), dtype=int)
        jpeg = np.asarray(Image.open(io.BytesIO(shown.attachments[0].data)).convert("RGB"), dtype=int)
        assert png.shape == jpeg.shape and np.abs(png - jpeg).mean() < 3


NO_TORCH_SCRIPT = """
import asyncio, sys
from bot.config import Settings
from bot.services import Services

async def main():
    services = await Services.open(Settings(_env_file=None))
    await services.start()
    print("engine", services.engine, "torch", "torch" in sys.modules, "diffusers", "diffusers" in sys.modules)
    await services.close()

asyncio.run(main())
"""


async def test_the_bot_in_remote_mode_loads_no_model_and_imports_no_torch(
    nats_server: NatsServer, workers: WorkerProcesses, tmp_path: Path
) -> None:
    env = {**workers.env(f"n{uuid.uuid4().hex[:8]}", nats_server.url(BOT_USER, BOT_PASS)),
           "ATELIER_DATA_DIR": str(tmp_path / "data")}
    done = await asyncio.to_thread(subprocess.run, [sys.executable, "-c", NO_TORCH_SCRIPT], env=env,
                                   capture_output=True, timeout=PATIENCE_S)
    assert done.returncode == 0, done.stderr.decode()[-2000:]
    assert "engine None torch False diffusers False" in done.stdout.decode()


async def test_the_bot_starts_and_queues_while_the_broker_is_down_then_dispatches(
    sandbox: Sandbox, workers: WorkerProcesses, start_bot: Callable[..., Any], spare_nats: NatsServer
) -> None:
    prefix = f"d{uuid.uuid4().hex[:8]}"
    # Remembered from an earlier run: the catalog the workers announced then.
    data_dir = Path(str(workers.data_dir)).parent / f"bot-{prefix}"
    data_dir.mkdir()
    (data_dir / "remote-models.json").write_text(
        '[{"name": "tiny", "family": "sd15", "steps": 3, "guidance": 5.0, "sampler": "euler"}]')
    # Nothing listens on the broker's port: the bot must start anyway (before, start-up waited for it).
    app: App = await start_bot(own_engine=True, ATELIER_BROKER_URL=spare_nats.url(BOT_USER, BOT_PASS),
                               ATELIER_BROKER_PREFIX=prefix, ATELIER_DATA_DIR=str(data_dir))
    services = app.services
    assert services is not None and services.remote is not None and not services.remote.connected

    alice, general = sandbox.users["alice"], sandbox.channel("general")
    interaction = await sandbox.slash(alice, general, "imagine",
                                      {"prompt": "a harbour at dawn --seed 5 --steps 3", "count": 1})
    await interaction.wait_ack()
    assert interaction.original is not None and "queued — position 1" in interaction.original.content
    [row] = await services.db.jobs.list_active()
    assert row.status == "queued"
    job_id = row.id

    # A worker started meanwhile retries too; once the broker is up, the job is dispatched and rendered.
    workers.start("w1", prefix, "--models", "tiny", url=spare_nats.url(WORKER_USER, WORKER_PASS))
    spare_nats.start()
    message = await sandbox.wait_for(lambda: result_for(sandbox, general, job_id), timeout=PATIENCE_S)
    assert message.id == interaction.original.id
    row = await services.db.jobs.get(job_id)
    assert row is not None and row.status == "done" and row.attempts == 1


@pytest.mark.parametrize("which", ["credentials", "jetstream"])
async def test_a_broker_the_bot_cannot_use_is_one_line_and_exit_2(
    which: str, nats_server: NatsServer, spare_nats: NatsServer, tmp_path: Path
) -> None:
    from tests.bot.test_startup_failures import run_atelier, the_error

    if which == "credentials":
        url = nats_server.url(BOT_USER, "wrong-password")
    else:
        spare_nats.config.write_text(f"listen: 127.0.0.1:{spare_nats.port}\n")  # no jetstream block
        spare_nats.start()
        url = f"nats://{BOT_USER}:wrong-password@127.0.0.1:{spare_nats.port}"
    env = {"ATELIER_BROKER_URL": url, "ATELIER_DATA_DIR": str(tmp_path / "d")}
    code, err = await run_atelier(tmp_path, env)
    line = the_error(code, err)
    assert code == 2
    assert ("credentials" if which == "credentials" else "JetStream") in line
    assert "wrong-password" not in err


async def test_admin_workers_and_queue_say_where_jobs_are(
    sandbox: Sandbox, workers: WorkerProcesses, remote_bot: Callable[..., Any], tmp_path: Path
) -> None:
    """Issue test 10: /admin workers lists both workers, then one offline after a kill; members are denied.
    /queue says which worker renders a job, and which model a job waits for a worker of."""
    from tests.bot.test_admin import admin

    prefix = f"a{uuid.uuid4().hex[:8]}"
    hold = tmp_path / "hold"
    # tiny-xl is known from an earlier run, but no worker serves it now.
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "remote-models.json").write_text(
        '[{"name": "tiny", "family": "sd15", "steps": 3, "guidance": 5.0, "sampler": "euler"},'
        ' {"name": "tiny-xl", "family": "sdxl", "steps": 3, "guidance": 5.0, "sampler": "euler"}]')
    workers.start("w1", prefix, "--models", "tiny", extra_env={"ATELIER_TEST_HOLD_FILE": str(hold)})
    w2 = workers.start("w2", prefix, "--models", "tiny", extra_env={"ATELIER_TEST_HOLD_FILE": str(hold)})
    app = await remote_bot(prefix)
    services = app.services
    assert services is not None and services.remote is not None
    remote = services.remote
    alice, mod, general = sandbox.users["alice"], sandbox.users["mod"], sandbox.channel("general")

    shown = await admin(sandbox, mod, general, "workers", {})
    assert shown.ephemeral and shown.content == "No workers are online."
    await sandbox.wait_for(lambda: len(remote.workers) == 2, timeout=PATIENCE_S)
    hold.touch()  # after both warm-up renders

    # A job held mid-render on one worker; one for tiny-xl that no worker serves.
    held = await sandbox.slash(alice, general, "imagine", {"prompt": "a mill --seed 1 --steps 3 --n 1"})
    await held.wait_ack()
    await sandbox.wait_for(lambda: shows_rendering(held) and remote.worker_of(
        next(iter(e.job_id for e in services.scheduler.snapshot() if e.status == "running"), 0)),
        timeout=PATIENCE_S)
    [running] = [e for e in services.scheduler.snapshot() if e.status == "running"]
    renderer = remote.worker_of(running.job_id)
    await sandbox.wait_for(lambda: remote.workers[str(renderer)].step > 0, timeout=PATIENCE_S)
    xl = await sandbox.slash(alice, general, "imagine",
                             {"prompt": "a tower --seed 2 --steps 3 --n 1", "model": "tiny-xl"})
    await xl.wait_ack()

    listing = await sandbox.slash(alice, general, "queue")
    await listing.wait_ack()
    text = listing.original.content
    assert f"`{running.job_id}` **a mill** — rendering on {renderer}" in text, text
    assert "waiting for a worker with model tiny-xl" in text, text

    shown = await admin(sandbox, mod, general, "workers", {})
    lines = shown.content.splitlines()
    assert shown.ephemeral and lines[0] == "2 workers online:", shown.content
    busy = next(line for line in lines if line.startswith(f"**{renderer}**"))
    assert f"rendering on `cpu` · models: tiny (loaded) · job {running.job_id} step " in busy, busy
    assert " · 0.0 jobs/h" in busy and "heartbeat" in busy, busy
    refused = await admin(sandbox, alice, general, "workers", {})
    assert refused.ephemeral and "Manage Server" in refused.content

    # The other worker dies: shown offline once its heartbeats stop.
    other = "w2" if renderer == "w1" else "w1"
    victim = w2 if other == "w2" else workers.started[0]
    victim.send_signal(signal.SIGKILL)
    victim.wait()

    async def offline() -> str:
        return (await admin(sandbox, mod, general, "workers", {})).content

    for _ in range(int(PATIENCE_S)):
        text = await offline()
        if f"**{other}** — offline (last heard" in text:
            break
        await asyncio.sleep(1)
    assert f"**{other}** — offline (last heard" in text, text
    assert text.splitlines()[0] == "1 worker online:", text

    # Once the held job is done, its worker reports its rate and seconds per image.
    hold.unlink()
    await sandbox.wait_for(lambda: result_for(sandbox, general, running.job_id), timeout=PATIENCE_S)
    for _ in range(int(PATIENCE_S)):
        text = await offline()
        if "tiny " in text and " s/image" in text:
            break
        await asyncio.sleep(1)
    line = next(line for line in text.splitlines() if line.startswith(f"**{renderer}**"))
    assert " · tiny " in line and line.endswith(" s/image") and " · 0.0 jobs/h" not in line, line


async def test_a_members_mask_travels_to_a_worker_with_its_source(
    sandbox: Sandbox, workers: WorkerProcesses, remote_bot: Callable[..., Any]
) -> None:
    prefix = f"m{uuid.uuid4().hex[:8]}"
    workers.start("w1", prefix, "--models", "tiny")
    app = await remote_bot(prefix)
    services = app.services
    assert services is not None
    await sandbox.wait_for(lambda: services.remote is not None and len(services.remote.workers) == 1,
                           timeout=PATIENCE_S)
    alice, general = sandbox.users["alice"], sandbox.channel("general")
    single = await imagine(sandbox, alice, general, "a dune --seed 2 --steps 2 --n 1", timeout=PATIENCE_S)
    source = np.asarray(image_of(single), np.int16)
    h, w = source.shape[:2]
    mask = Image.new("L", (w, h), 0)
    mask.paste(255, (0, 0, w, h // 2))  # repaint the top half
    buf = io.BytesIO()
    mask.save(buf, format="PNG")
    before = {m.id for m in results(sandbox, general)}
    asked = await sandbox.slash(alice, general, "region", {"job": str(job_id_of(single))},
                                attachments={"mask": ("mask.png", buf.getvalue())})
    await asked.wait_ack()
    result = await sandbox.wait_for(
        lambda: next((m for m in results(sandbox, general) if m.id not in before), None), timeout=PATIENCE_S)
    rows = await services.db.images.for_job(job_id_of(result))
    assert rows
    for row in rows:
        px = np.asarray(Image.open(io.BytesIO(services.blobs.read(row.blob))).convert("RGB"), np.int16)
        assert (px[h // 2:] == source[h // 2:]).all()  # kept, exactly, by the worker's overlay
        assert np.abs(px[: h // 2] - source[: h // 2]).max() > 10
