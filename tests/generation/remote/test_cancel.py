"""Cancel in remote mode, through the sandbox bot and a real `atelier worker`: a queued job never reaches
the broker, a dispatched one is dropped before it renders, a rendering one stops at the next step, and
one job of a shared batch is cancelled while the others render and are delivered."""

from __future__ import annotations

import functools
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import nats
from nats.js.api import DeliverPolicy

from generation.remote.wire import Subjects, decode_event, decode_progress
from sandbox import Sandbox
from tests.bot.helpers import button, result_for
from tests.generation.remote.conftest import (
    BOT_PASS,
    BOT_USER,
    NatsServer,
    WorkerProcesses,
    imagine_job,
    job_status,
    wait_status,
)
from tests.generation.remote.test_bot_remote import PATIENCE_S, remote_bot  # noqa: F401


async def test_cancel_queued_dispatched_rendering_and_one_job_of_a_shared_batch(
    sandbox: Sandbox, workers: WorkerProcesses, remote_bot: Callable[..., Any],  # noqa: F811
    nats_server: NatsServer, tmp_path: Path,
) -> None:
    prefix = f"x{uuid.uuid4().hex[:8]}"
    subjects = Subjects(prefix)
    hold = tmp_path / "hold"  # while it exists, renders wait at the end of a step
    workers.start("w1", prefix, "--models", "tiny", "--slots", "2",
                  extra_env={"ATELIER_TEST_HOLD_FILE": str(hold)})
    app = await remote_bot(prefix)
    services = app.services
    assert services is not None and services.remote is not None
    remote, scheduler = services.remote, services.scheduler
    await sandbox.wait_for(lambda: "w1" in remote.workers, timeout=PATIENCE_S)
    hold.touch()  # after its warm-up render

    # What the worker reports, watched from the broker.
    nc = await nats.connect(nats_server.url(BOT_USER, BOT_PASS))
    events: dict[int, list[str]] = {}
    steps: dict[int, list[tuple[int, int]]] = {}

    async def on_event(msg: Any) -> None:
        event = decode_event(msg.data)
        events.setdefault(event.job_id, []).append(event.kind)

    async def on_progress(msg: Any) -> None:
        progress = decode_progress(msg.data)
        steps.setdefault(progress.job_id, []).append((progress.step, progress.total))

    await nc.jetstream().subscribe(subjects.events(">"), cb=on_event, deliver_policy=DeliverPolicy.ALL)
    await nc.subscribe(subjects.progress("*"), cb=on_progress)

    general = sandbox.channel("general")
    known: list[int] = []

    submit = functools.partial(imagine_job, sandbox, scheduler, known)

    async def cancel(user: str, job_id: int) -> None:
        listing = await sandbox.slash(sandbox.users[user], general, "queue")
        await listing.wait_ack()
        done = await sandbox.click(sandbox.users[user], listing.original,
                                   button(listing.original, f"Cancel {job_id}"))
        await done.wait_ack()

    status = functools.partial(job_status, services.db)
    until = functools.partial(wait_status, services.db)

    try:
        # The worker's two slots: one rendering (held), one dispatched and waiting for the render thread.
        rendering = await submit("alice", "a lighthouse --steps 3 --n 1")
        await sandbox.wait_for(lambda: steps.get(rendering), timeout=PATIENCE_S)
        dispatched = await submit("mod", "a harbour --steps 4 --n 1")
        await sandbox.wait_for(lambda: "started" in events.get(dispatched, ()), timeout=PATIENCE_S)
        # No slot left: these wait in the bot. Two members' compatible jobs, and one more.
        shared = [await submit("bob", "a red boat --steps 2 --n 1"),
                  await submit("owner", "a blue boat --steps 2 --n 1")]
        queued = await submit("alice", "a dune --steps 5 --n 1")
        assert [await status(i) for i in (*shared, queued)] == ["queued"] * 3

        # 1. Queued: cancelled in the bot; it never reaches the broker.
        await cancel("alice", queued)
        await until(queued, "cancelled")

        # 2. Dispatched, not started: the worker drops it without rendering it.
        await cancel("mod", dispatched)
        await until(dispatched, "cancelled")
        await sandbox.wait_for(lambda: "cancelled" in events.get(dispatched, ()), timeout=PATIENCE_S)

        # Its slot went to the shared batch: one dispatch for both members, waiting behind the held render.
        await sandbox.wait_for(lambda: all("started" in events.get(i, ()) for i in shared),
                               timeout=PATIENCE_S)

        # 3. Rendering: it stops at the next step (held at the end of step 1 of 3).
        await cancel("alice", rendering)
        await until(rendering, "cancelled")
        await sandbox.wait_for(lambda: "cancelled" in events.get(rendering, ()), timeout=PATIENCE_S)

        # 4. One job of the shared batch, while the batch renders: the other is rendered and delivered.
        await sandbox.wait_for(lambda: all(steps.get(i) for i in shared), timeout=PATIENCE_S)
        await cancel("owner", shared[1])
        # (As in-process: a job cancelled inside a batch that goes on is dropped when the batch ends.)
        hold.unlink()
        await until(shared[1], "cancelled")
        await sandbox.wait_for(lambda: "cancelled" in events.get(shared[1], ()), timeout=PATIENCE_S)
        await sandbox.wait_for(lambda: result_for(sandbox, general, shared[0]), timeout=PATIENCE_S)
        await until(shared[0], "done")
    finally:
        await nc.close()

    assert queued not in events and queued not in steps  # never dispatched
    assert dispatched not in steps and "done" not in events[dispatched]  # never rendered
    assert "done" not in events[rendering]
    assert max(step for step, _ in steps[rendering]) < 3  # stopped before its last step
    assert events[shared[0]][-1] == "done" and "done" not in events[shared[1]]
    for job_id in (queued, dispatched, rendering, shared[1]):
        assert result_for(sandbox, general, job_id) is None
        assert await services.db.images.for_job(job_id) == []
    assert len(await services.db.images.for_job(shared[0])) == 1
