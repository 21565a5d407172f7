"""Throughput with remote workers: several batches in flight, each only where a live worker serving its
model has a free slot (real nats-server, real `atelier worker` subprocesses, the sandbox bot)."""

from __future__ import annotations

import asyncio
import functools
import signal
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import nats
from nats.js.api import DeliverPolicy

from generation.remote.dispatcher import RemoteBackend
from generation.remote.wire import Event, ModelInfo, Subjects, WorkerInfo, decode_event
from sandbox import Sandbox
from tests.bot.helpers import result_for
from tests.generation.remote.conftest import BOT_PASS, BOT_USER, NatsServer, WorkerProcesses, imagine_job
from tests.generation.remote.test_bot_remote import PATIENCE_S, remote_bot  # noqa: F401


def _worker(name: str, slots: int, *models: str) -> WorkerInfo:
    return WorkerInfo(name=name, device="cpu", slots=slots, max_batch=4, models=tuple(
        ModelInfo(name=m, family="sd15", steps=20, guidance=7.0, sampler="euler") for m in models))


def test_capacity_counts_the_bots_batches_in_flight_against_the_workers_slots() -> None:
    backend = RemoteBackend("nats://127.0.0.1:1", Subjects("cap"))
    assert not backend.can_start("tiny", [])  # no worker at all
    backend.workers = {"w1": _worker("w1", 2, "tiny")}
    assert backend.can_start("tiny", [])
    assert backend.can_start("tiny", ["tiny"])  # one rendering, one prefetched
    assert not backend.can_start("tiny", ["tiny", "tiny"])
    assert not backend.can_start("tiny-xl", [])  # nobody serves it: it waits, it is not refused
    # A worker serving both models and one serving only tiny: a tiny batch in flight is counted on the
    # tiny-only worker, so the shared one still has room for tiny-xl.
    backend.workers = {"both": _worker("both", 1, "tiny", "tiny-xl"), "sd": _worker("sd", 1, "tiny")}
    assert backend.can_start("tiny-xl", ["tiny"])
    assert not backend.can_start("tiny-xl", ["tiny", "tiny"])
    assert not backend.can_start("tiny", ["tiny-xl", "tiny"])
    # A batch whose workers all left waits in the broker and takes no slot from the live ones.
    backend.workers = {"sd": _worker("sd", 1, "tiny")}
    assert backend.can_start("tiny", ["tiny-xl"])


async def test_batches_start_only_on_free_slots_and_a_second_worker_renders_beside_the_first(
    sandbox: Sandbox, workers: WorkerProcesses, remote_bot: Callable[..., Any], tmp_path: Path  # noqa: F811
) -> None:
    prefix = f"s{uuid.uuid4().hex[:8]}"
    hold = tmp_path / "hold"  # while it exists, renders wait at the end of a step
    held = {"ATELIER_TEST_HOLD_FILE": str(hold)}
    workers.start("w1", prefix, "--models", "tiny", "--slots", "2", extra_env=held)
    app = await remote_bot(prefix)
    services = app.services
    assert services is not None and services.remote is not None
    remote = services.remote
    await sandbox.wait_for(lambda: "w1" in remote.workers, timeout=PATIENCE_S)
    hold.touch()  # after its warm-up render

    def busy(name: str) -> tuple[int, ...]:
        info = remote.workers.get(name)  # the registry as the bot last read it
        return () if info is None else info.busy

    # Three jobs that cannot share a batch (other step counts), from two members.
    alice, bob, general = sandbox.users["alice"], sandbox.users["bob"], sandbox.channel("general")
    ids = []
    for user, steps in ((alice, 2), (bob, 3), (alice, 4)):
        interaction = await sandbox.slash(user, general, "imagine",
                                          {"prompt": f"a kite --steps {steps} --n 1"})
        await interaction.wait_ack()
        ids.append(int(await sandbox.wait_for(lambda: next(
            (e.job_id for e in services.scheduler.snapshot() if e.job_id not in ids), None),
            timeout=PATIENCE_S)))
    first, second, third = ids

    async def statuses() -> list[str]:
        return [row.status for row in [await services.db.jobs.get(i) for i in ids] if row is not None]

    # w1 renders the first and holds the second (its two slots); the third stays queued in the bot.
    await sandbox.wait_for(lambda: busy("w1") == (first,), timeout=PATIENCE_S)
    for _ in range(int(PATIENCE_S * 10)):
        if (await statuses())[1] == "running":
            break
        await asyncio.sleep(0.1)
    assert await statuses() == ["running", "running", "queued"]

    # A second worker: the third job starts on it while w1 still renders the first.
    hold2 = tmp_path / "hold2"  # its own hold: its warm-up render must not wait
    workers.start("w2", prefix, "--models", "tiny", "--slots", "2",
                  extra_env={"ATELIER_TEST_HOLD_FILE": str(hold2)})
    await sandbox.wait_for(lambda: "w2" in remote.workers, timeout=PATIENCE_S)
    hold2.touch()
    await sandbox.wait_for(lambda: busy("w2") == (third,), timeout=PATIENCE_S)
    assert busy("w1") == (first,)
    assert remote.taken_by == {first: "w1", second: "w1", third: "w2"}  # for /queue and /admin workers

    hold.unlink()
    hold2.unlink()
    for job_id in ids:
        await sandbox.wait_for(lambda job_id=job_id: result_for(sandbox, general, job_id), timeout=PATIENCE_S)
    assert await statuses() == ["done", "done", "done"]


async def test_routing_by_model_and_four_members_in_one_engine_call(
    sandbox: Sandbox, workers: WorkerProcesses, remote_bot: Callable[..., Any],  # noqa: F811
    nats_server: NatsServer,
) -> None:
    """Issue 12, tests 6 and 7: a tiny and a tiny-xl worker; tiny jobs wait while no worker serves tiny
    (and do not hold up tiny-xl), then run when one starts: four compatible jobs of four members in one
    dispatch, rendered by one engine call."""
    prefix = f"r{uuid.uuid4().hex[:8]}"
    subjects = Subjects(prefix)
    sd = workers.start("sd", prefix, "--models", "tiny", "--slots", "1")
    workers.start("xl", prefix, "--models", "tiny-xl", "--slots", "1")
    app = await remote_bot(prefix)
    services = app.services
    assert services is not None and services.remote is not None
    remote, scheduler = services.remote, services.scheduler
    await sandbox.wait_for(lambda: {"sd", "xl"} <= set(remote.workers), timeout=PATIENCE_S)
    # The tiny worker leaves (SIGTERM: it takes itself out of the registry); its model stays known.
    sd.send_signal(signal.SIGTERM)
    await asyncio.to_thread(sd.wait, PATIENCE_S)
    await sandbox.wait_for(lambda: "sd" not in remote.workers, timeout=PATIENCE_S)
    assert not remote.serves("tiny") and sorted(services.registry.names()) == ["tiny", "tiny-xl"]

    nc = await nats.connect(nats_server.url(BOT_USER, BOT_PASS))
    done: dict[int, Event] = {}

    async def on_event(msg: Any) -> None:
        event = decode_event(msg.data)
        if event.kind == "done":
            done[event.job_id] = event

    await nc.jetstream().subscribe(subjects.events(">"), cb=on_event, deliver_policy=DeliverPolicy.ALL)
    general = sandbox.channel("general")
    sandbox.add_user("carol")
    known: list[int] = []

    submit = functools.partial(imagine_job, sandbox, scheduler, known)

    try:
        tiny = [await submit(user, f"a boat number {i} --steps 2 --n 1")
                for i, user in enumerate(("alice", "bob", "mod", "carol"))]
        # Behind four jobs that cannot start, a tiny-xl job runs at once.
        xl = await submit("owner", "a tower --steps 2 --n 1 --model tiny-xl")
        await sandbox.wait_for(lambda: result_for(sandbox, general, xl), timeout=PATIENCE_S)
        assert done[xl].worker == "xl"
        assert all(e.status == "queued" for e in scheduler.snapshot() if e.job_id in tiny)
        assert len([e for e in scheduler.snapshot() if e.job_id in tiny]) == 4

        workers.start("sd2", prefix, "--models", "tiny", "--slots", "1")
        for job_id in tiny:
            await sandbox.wait_for(lambda job_id=job_id: result_for(sandbox, general, job_id),
                                   timeout=PATIENCE_S)
        await sandbox.wait_for(lambda: all(i in done for i in tiny), timeout=PATIENCE_S)
    finally:
        await nc.close()
    # One dispatch to one worker, one engine call: each job's share of the same render time.
    assert {done[i].dispatch_id for i in tiny} == {done[tiny[0]].dispatch_id}
    assert {done[i].worker for i in tiny} == {"sd2"}
    assert len({done[i].render_seconds for i in tiny}) == 1
