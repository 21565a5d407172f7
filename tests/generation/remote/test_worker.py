"""`atelier worker` as a real subprocess against a real nats-server: what it announces, what it sends
back for a dispatched batch (checked images as chunks), and how it refuses a broker it cannot use."""

from __future__ import annotations

import asyncio
import io
import subprocess
import uuid
from collections.abc import AsyncIterator
from typing import Any

import nats
import pytest
from nats.js.api import DeliverPolicy
from PIL import Image

from generation.remote.broker import ensure_streams, get_blob
from generation.remote.wire import (
    MSG_ID_HEADER,
    Dispatch,
    DispatchJob,
    Event,
    Subjects,
    WorkerInfo,
    decode_event,
    decode_worker,
    encode,
)
from generation.request import RenderRequest
from tests.generation.remote.conftest import (
    BOT_PASS,
    BOT_USER,
    WORKER_PASS,
    WORKER_USER,
    NatsServer,
    WorkerProcesses,
)

# Bounds on waiting for a subprocess (loading torch and the tiny model), never timing assertions.
PATIENCE_S = 180.0


def request(prompt: str, seeds: tuple[int, ...] = (1,), model: str = "tiny") -> dict[str, Any]:
    return RenderRequest(prompt=prompt, model=model, width=64, height=64, steps=2, guidance=5.0,
                         sampler="euler", seeds=seeds).to_json()


class Bus:
    """The bot's end of the broker, reduced to what a test needs."""

    def __init__(self, nc: Any, js: Any, subjects: Subjects) -> None:
        self.nc, self.js, self.subjects = nc, js, subjects
        self.events: asyncio.Queue[Event] = asyncio.Queue()

    async def dispatch(self, model: str, *jobs: tuple[int, dict[str, Any]]) -> str:
        dispatch_id = uuid.uuid4().hex
        body = encode(Dispatch(dispatch_id=dispatch_id,
                               jobs=tuple(DispatchJob(job_id=j, request=r) for j, r in jobs)))
        await self.js.publish(self.subjects.jobs(model), body, headers={MSG_ID_HEADER: dispatch_id})
        return dispatch_id

    async def next_event(self, kind: str | None = None) -> Event:
        while True:
            event = await asyncio.wait_for(self.events.get(), PATIENCE_S)
            if kind is None or event.kind == kind:
                return event

    async def worker(self, name: str) -> WorkerInfo:
        kv = await self.js.key_value(self.subjects.workers_bucket)
        for _ in range(int(PATIENCE_S * 10)):
            try:
                return decode_worker((await kv.get(name)).value)
            except nats.js.errors.KeyNotFoundError:
                await asyncio.sleep(0.1)
        raise AssertionError(f"worker {name} never announced itself")


@pytest.fixture
async def bus(nats_server: NatsServer) -> AsyncIterator[Bus]:
    subjects = Subjects(f"t{uuid.uuid4().hex[:8]}")
    nc = await nats.connect(nats_server.url(BOT_USER, BOT_PASS))
    js = nc.jetstream()
    await ensure_streams(js, subjects)
    bus = Bus(nc, js, subjects)

    async def on_event(msg: Any) -> None:
        await bus.events.put(decode_event(msg.data))
        await msg.ack()

    await js.subscribe(subjects.events(">"), cb=on_event, deliver_policy=DeliverPolicy.ALL)
    yield bus
    await nc.close()


async def test_a_worker_announces_itself_and_renders_a_dispatched_batch(
    bus: Bus, workers: WorkerProcesses
) -> None:
    workers.start("gpu0", bus.subjects.prefix, "--models", "tiny", "--slots", "2")
    info = await bus.worker("gpu0")
    assert [m.name for m in info.models] == ["tiny"] and info.models[0].family == "sd15"
    assert info.slots == 2

    await bus.dispatch("tiny", (11, request("a red fox", (5, 6))), (12, request("a blue owl", (9,))))
    done: dict[int, Event] = {}
    while len(done) < 2:
        event = await bus.next_event()
        assert event.kind in ("started", "done"), event
        if event.kind == "done":
            done[event.job_id] = event
    assert [ref.seed for ref in done[11].images] == [5, 6]
    assert [ref.seed for ref in done[12].images] == [9]
    for ref in (*done[11].images, *done[12].images):
        data = await get_blob(bus.js, bus.subjects, ref.sha256)
        assert len(data) == ref.size
        with Image.open(io.BytesIO(data)) as image:
            assert image.format == "PNG" and image.size == (ref.width, ref.height) == (64, 64)
    assert done[11].worker == "gpu0"


async def test_a_malformed_dispatch_is_dropped_and_the_worker_goes_on(
    bus: Bus, workers: WorkerProcesses
) -> None:
    workers.start("gpu1", bus.subjects.prefix, "--models", "tiny")
    await bus.worker("gpu1")
    await bus.js.publish(bus.subjects.jobs("tiny"), b'{"v": 1, "jobs": "nope"}')
    await bus.dispatch("tiny", (21, {"prompt": "no model, no size"}))
    await bus.dispatch("tiny", (22, request("a green frog")))
    failed = await bus.next_event("failed")
    assert failed.job_id == 21 and "could not be read" in failed.reason
    assert (await bus.next_event("done")).job_id == 22
    assert "terminated: malformed dispatch" in workers.log_of("gpu1", bus.subjects.prefix)


@pytest.mark.parametrize("which", ["credentials", "jetstream"])
async def test_a_broker_it_cannot_use_is_one_line_and_exit_2(
    which: str, nats_server: NatsServer, workers: WorkerProcesses, tmp_path: Any
) -> None:
    if which == "credentials":
        url = nats_server.url("worker", "wrong-password")
        process = workers.start("w", "tx", url=url)
    else:
        plain = NatsServer(0, tmp_path, tmp_path / "plain.conf")
        from tests.generation.remote.conftest import _free_port

        plain.port = _free_port()
        plain.config.write_text(f"listen: 127.0.0.1:{plain.port}\n")
        plain.start()
        try:
            process = workers.start("w", "tx", url=f"nats://127.0.0.1:{plain.port}")
            await asyncio.to_thread(process.wait, PATIENCE_S)
        finally:
            plain.kill()
    try:
        code = await asyncio.to_thread(process.wait, PATIENCE_S)
    except subprocess.TimeoutExpired:
        raise AssertionError("the worker kept going against a broker it cannot use") from None
    out = workers.log_of("w", "tx")
    assert code == 2
    last = out.strip().splitlines()[-1]
    assert last.startswith("error: ") and ("credentials" if which == "credentials" else "JetStream") in last
    assert "wrong-password" not in out and "Traceback" not in out


async def test_a_worker_user_may_not_publish_jobs(nats_server: NatsServer) -> None:
    """The README's permissions: only the bot decides what runs (the fair order is the bot's)."""
    subjects = Subjects(f"p{uuid.uuid4().hex[:8]}")
    bot = await nats.connect(nats_server.url(BOT_USER, BOT_PASS))
    await ensure_streams(bot.jetstream(), subjects)
    errors: list[Exception] = []

    async def on_error(exc: Exception) -> None:
        errors.append(exc)

    worker = await nats.connect(nats_server.url(WORKER_USER, WORKER_PASS), error_cb=on_error)
    try:
        with pytest.raises((nats.errors.TimeoutError, nats.js.errors.NoStreamResponseError)):
            await worker.jetstream().publish(subjects.jobs("tiny"), b"{}", timeout=2)
        info = await bot.jetstream().stream_info(subjects.jobs_stream)
        assert info.state.messages == 0
    finally:
        await worker.close()
        await bot.close()
