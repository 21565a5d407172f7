"""Remote workers (issue 12), measured side by side in one run on the tiny model (CPU, one torch thread
per process), through the code the product runs: the bot's Scheduler + RemoteBackend over a real
nats-server, real `atelier worker` subprocesses.

1. Throughput, the same jobs (each 4 images) three ways: 1 worker, 2 workers, and 2 bare engine
   processes (Engine.render only, the floor; goal: 2 workers >= 0.95x the bare pair).
2. Per-job overhead, remote (1 worker) vs in-process (Scheduler + in-process Worker) on the same jobs.
3. Seconds from SIGKILL of a worker mid-render to its job starting on the other (ack-wait 3 s).
4. Cancel latency: from Scheduler.cancel() of a rendering job to the worker's "cancelled", in steps.

    .venv/bin/python bench/workers.py [--jobs 8] [--size 512] [--steps 20] [--rounds 1]
    .venv/bin/python bench/workers.py --quick        # small sizes and steps: a run of a few minutes
"""

from __future__ import annotations

import sys
from pathlib import Path

# Run as a script, bench/ would be first on sys.path; put the repository root there instead.
sys.path[0] = str(Path(__file__).resolve().parents[1])

import argparse  # noqa: E402
import asyncio  # noqa: E402
import json  # noqa: E402
import os  # noqa: E402
import signal  # noqa: E402
import socket  # noqa: E402
import subprocess  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
import uuid  # noqa: E402
from typing import Any  # noqa: E402

os.environ.setdefault("HF_HUB_OFFLINE", "1")
ONE_THREAD = {"OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
os.environ.update(ONE_THREAD)

from generation.events import JobDone, JobFailed, JobProgress  # noqa: E402
from generation.remote.dispatcher import RemoteBackend  # noqa: E402
from generation.remote.wire import Subjects, decode_event  # noqa: E402
from generation.request import RenderRequest  # noqa: E402
from generation.scheduler import JobOwner, Scheduler  # noqa: E402
from storage.blobs import BlobStore  # noqa: E402
from storage.db import Database  # noqa: E402

PATIENCE_S = 600.0


def request(i: int, size: int, steps: int, images: int = 4) -> RenderRequest:
    return RenderRequest(prompt=f"a lighthouse at dusk, study {i}", model="tiny", width=size, height=size,
                         steps=steps, guidance=5.0, sampler="euler",
                         seeds=tuple(range(i * images, (i + 1) * images)))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def start_nats(root: Path) -> tuple[subprocess.Popen[bytes], str]:
    port = free_port()
    config = root / "nats.conf"
    config.write_text(f'listen: 127.0.0.1:{port}\njetstream {{ store_dir: "{root / "js"}" }}\n')
    binary = Path(sys.executable).parent / "nats-server"
    process = subprocess.Popen([str(binary), "-c", str(config)], stdout=subprocess.DEVNULL,
                               stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return process, f"nats://127.0.0.1:{port}"
        except OSError:
            time.sleep(0.05)
    process.kill()
    raise SystemExit("nats-server did not start")


class Workers:
    def __init__(self, url: str, data: Path, logs: Path) -> None:
        self.url, self.data, self.logs = url, data, logs
        self.procs: list[subprocess.Popen[bytes]] = []

    def start(self, name: str, prefix: str, *args: str, env: dict[str, str] | None = None
              ) -> subprocess.Popen[bytes]:
        base = {k: v for k, v in os.environ.items() if not k.startswith(("ATELIER_", "DISCORD_"))}
        base.update(ONE_THREAD, ATELIER_BROKER_URL=self.url, ATELIER_BROKER_PREFIX=prefix,
                    ATELIER_DATA_DIR=str(self.data), ATELIER_MODELS="tiny=tiny", ATELIER_DEVICE="cpu",
                    HF_HUB_OFFLINE="1", **(env or {}))
        with open(self.logs / f"{prefix}-{name}.log", "ab") as log:
            process = subprocess.Popen([sys.executable, "-m", "bot.cli", "worker", "--name", name, *args],
                                       env=base, stdout=log, stderr=subprocess.STDOUT)
        self.procs.append(process)
        return process

    def stop_all(self) -> None:
        for process in self.procs:
            if process.poll() is None:
                process.terminate()
        for process in self.procs:
            try:
                process.wait(30)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        self.procs.clear()


async def until(predicate: Any, what: str, timeout: float = PATIENCE_S) -> None:  # noqa: ASYNC109
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise SystemExit(f"gave up waiting for {what}")
        await asyncio.sleep(0.02)


class Bot:
    """The bot's scheduler on its own SQLite file, with the remote runner or the in-process engine."""

    def __init__(self, root: Path, name: str) -> None:
        self.root, self.name = root, name
        self.backend: RemoteBackend | None = None
        self.scheduler: Scheduler | None = None
        self.db: Database | None = None

    async def open(self, *, url: str | None = None, prefix: str = "", engine: Any = None) -> Scheduler:
        self.db = await Database.open(self.root / f"{self.name}.db")
        blobs = BlobStore(self.root / f"{self.name}-blobs")
        if url is not None:
            self.backend = RemoteBackend(url, Subjects(prefix))
            await self.backend.start()
            self.scheduler = Scheduler(self.db, None, blobs, runner=self.backend.runner(self.db, blobs),
                                       max_batch=4, max_queued_per_user=100, max_queued_total=1000)
        else:
            self.scheduler = Scheduler(self.db, engine, blobs, max_batch=4, max_queued_per_user=100,
                                       max_queued_total=1000)
        await self.scheduler.start()
        return self.scheduler

    async def close(self) -> None:
        if self.scheduler is not None:
            await self.scheduler.stop()
        if self.backend is not None:
            await self.backend.close()
        if self.db is not None:
            await self.db.close()


async def run_jobs(scheduler: Scheduler, requests: list[RenderRequest]) -> float:
    """Submit every job (one member each) and wait until all are done: seconds."""
    stream = scheduler.subscribe()
    started = time.perf_counter()
    ids = {await scheduler.submit(r, JobOwner(user_id=1000 + i, guild_id=1)) for i, r in enumerate(requests)}
    left = set(ids)
    while left:
        event = await asyncio.wait_for(stream.next(), PATIENCE_S)
        if isinstance(event, JobFailed) and event.job_id in left:
            raise SystemExit(f"job {event.job_id} failed")
        if isinstance(event, JobDone):
            left.discard(event.job_id)
    return time.perf_counter() - started


async def remote_throughput(root: Path, workers: Workers, url: str, count: int,
                            requests: list[RenderRequest]) -> float:
    prefix = f"t{count}{uuid.uuid4().hex[:6]}"
    for i in range(count):
        workers.start(f"w{i}", prefix, "--models", "tiny", "--slots", "2")
    bot = Bot(root, prefix)
    try:
        scheduler = await bot.open(url=url, prefix=prefix)
        backend = bot.backend
        assert backend is not None
        await until(lambda: len(backend.workers) == count, f"{count} workers")
        return await run_jobs(scheduler, requests)
    finally:
        await bot.close()
        workers.stop_all()


BARE_CHILD = """
import json, os, sys, time
sys.path.insert(0, os.getcwd())
import torch
torch.set_num_threads(1)
from pathlib import Path
from generation.engine import Engine
from generation.models import ModelRegistry
from generation.request import RenderRequest
engine = Engine(ModelRegistry([("tiny", "tiny")], Path(sys.argv[1]), device="cpu"))
engine.warm_up("tiny")
jobs = [RenderRequest.from_json(j) for j in json.loads(sys.argv[2])]
print("ready", flush=True)
sys.stdin.readline()
start = time.perf_counter()
for job in jobs:
    engine.render([job])
print(time.perf_counter() - start, flush=True)
"""


async def bare_pair(data: Path, requests: list[RenderRequest]) -> float:
    """Two engine processes, each rendering its half of the jobs one call per job: seconds for all."""
    halves = [requests[0::2], requests[1::2]]
    # Started (and warmed up) before the clock starts: a blocking Popen here costs the timing nothing.
    procs = [subprocess.Popen([sys.executable, "-c", BARE_CHILD, str(data),  # noqa: ASYNC220
                               json.dumps([r.to_json() for r in half])],
                              stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
                              env={**os.environ, **ONE_THREAD}) for half in halves]
    try:
        for p in procs:
            assert p.stdout is not None
            line = await asyncio.to_thread(p.stdout.readline)
            if line.strip() != "ready":
                raise SystemExit("a bare engine process did not start")
        started = time.perf_counter()
        for p in procs:
            assert p.stdin is not None
            p.stdin.write("go\n")
            p.stdin.flush()
        for p in procs:
            assert p.stdout is not None
            await asyncio.to_thread(p.stdout.readline)
        return time.perf_counter() - started
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
            p.wait()


async def in_process(root: Path, data: Path, requests: list[RenderRequest]) -> float:
    import torch

    from generation.engine import Engine
    from generation.models import ModelRegistry

    torch.set_num_threads(1)
    engine = Engine(ModelRegistry([("tiny", "tiny")], data, device="cpu"))
    await asyncio.to_thread(engine.warm_up, "tiny")
    bot = Bot(root, "inproc")
    try:
        return await run_jobs(await bot.open(engine=engine), requests)
    finally:
        await bot.close()


async def faults(root: Path, workers: Workers, url: str, size: int) -> tuple[float, float, float]:
    """(seconds to redelivery after SIGKILL, cancel latency in seconds, in steps)."""
    import nats

    prefix = f"f{uuid.uuid4().hex[:6]}"
    subjects = Subjects(prefix)
    hold = root / f"{prefix}.hold"  # the victim waits at a step end, so it is surely mid-render when killed
    victim = workers.start("victim", prefix, "--models", "tiny", "--ack-wait", "3",
                           env={"ATELIER_TEST_HOLD_FILE": str(hold)})
    bot = Bot(root, prefix)
    nc = None
    try:
        scheduler = await bot.open(url=url, prefix=prefix)
        backend = bot.backend
        assert backend is not None
        await until(lambda: "victim" in backend.workers, "the victim")
        hold.touch()
        seen: list[tuple[float, Any]] = []
        nc = await nats.connect(url)

        async def on_event(msg: Any) -> None:
            seen.append((time.perf_counter(), decode_event(msg.data)))

        await nc.jetstream().subscribe(subjects.events(">"), cb=on_event)
        # The job starts on the victim (alone so far), then the other worker comes up idle.
        job = await scheduler.submit(request(1, size, 50, images=1), JobOwner(1, 1))
        await until(lambda: any(e.kind == "started" and e.job_id == job and e.worker == "victim"
                                for _, e in seen), "the victim to start")
        await until(lambda: backend.workers.get("victim") is not None and backend.workers["victim"].busy,
                    "the victim rendering")
        workers.start("other", prefix, "--models", "tiny", "--ack-wait", "3")
        await until(lambda: "other" in backend.workers, "the other worker")
        victim.send_signal(signal.SIGKILL)
        killed = time.perf_counter()
        await until(lambda: any(e.kind == "started" and e.worker == "other" for _, e in seen), "redelivery")
        redelivery = next(t for t, e in seen if e.kind == "started" and e.worker == "other") - killed
        await until(lambda: any(e.kind == "done" and e.job_id == job for _, e in seen), "the redelivered job")

        # Cancel: a long render on the other worker, cancelled after a few steps.
        stream = scheduler.subscribe()
        long_job = await scheduler.submit(request(2, size, 400, images=1), JobOwner(2, 1))
        marks: list[tuple[float, int]] = []
        while len(marks) < 3:
            event = await asyncio.wait_for(stream.next(), PATIENCE_S)
            if isinstance(event, JobProgress) and event.job_id == long_job:
                marks.append((time.perf_counter(), event.step))
        per_step = (marks[-1][0] - marks[0][0]) / max(1, marks[-1][1] - marks[0][1])
        asked = time.perf_counter()
        await scheduler.cancel(long_job)
        await until(lambda: any(e.kind == "cancelled" and e.job_id == long_job for _, e in seen),
                    "the worker's cancel")
        latency = next(t for t, e in seen if e.kind == "cancelled" and e.job_id == long_job) - asked
        return redelivery, latency, latency / per_step
    finally:
        if nc is not None:
            await nc.close()
        await bot.close()
        workers.stop_all()


async def main(args: argparse.Namespace) -> None:
    from generation.tiny import ensure_tiny_model

    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        data = root / "data"
        ensure_tiny_model(data)
        nats_server, url = start_nats(root)
        workers = Workers(url, data, root)
        try:
            requests = [request(i, args.size, args.steps) for i in range(args.jobs)]
            print(f"{args.jobs} jobs of 4 images at {args.size}² / {args.steps} steps; one torch thread per "
                  f"process; {os.cpu_count()} CPUs (shared: other work on the machine skews every figure)")
            # Each configuration runs once per round, the rounds interleaved; the best round of each counts,
            # so a burst of other work on the machine skews one configuration less.
            bare = one = two = local = float("inf")
            for _ in range(args.rounds):
                bare = min(bare, await bare_pair(data, requests))
                one = min(one, await remote_throughput(root, workers, url, 1, requests))
                two = min(two, await remote_throughput(root, workers, url, 2, requests))
                local = min(local, await in_process(root, data, requests))
            per_min = {name: args.jobs * 60 / secs for name, secs in
                       (("1 worker", one), ("2 workers", two), ("2 bare engines", bare))}
            for name, value in per_min.items():
                print(f"  {name:>15}: {value:7.2f} jobs/min")
            print(f"  2 workers / 2 bare engines: {per_min['2 workers'] / per_min['2 bare engines']:.3f}x "
                  "(goal >= 0.95)")
            print(f"  2 workers / 1 worker: {per_min['2 workers'] / per_min['1 worker']:.2f}x")
            print(f"per job: remote (1 worker) {one / args.jobs:.2f} s, "
                  f"in-process {local / args.jobs:.2f} s: "
                  f"overhead {100 * (one - local) / local:+.1f} % (goal <= 3 %)")
            redelivery, cancel_s, cancel_steps = await faults(root, workers, url, args.fault_size)
            print(f"redelivery after SIGKILL (ack-wait 3 s): {redelivery:.1f} s")
            print(f"cancel latency while rendering: {cancel_s:.2f} s = {cancel_steps:.1f} steps "
                  f"(at {args.fault_size}²)")
        finally:
            workers.stop_all()
            nats_server.kill()
            nats_server.wait()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--jobs", type=int, default=8)
    parser.add_argument("--size", type=int, default=512)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--rounds", type=int, default=1, help="run each configuration this often (best)")
    parser.add_argument("--fault-size", type=int, default=128, help="image side of the kill / cancel jobs")
    parser.add_argument("--quick", action="store_true", help="6 jobs at 256² / 4 steps")
    ns = parser.parse_args()
    if ns.quick:
        ns.jobs, ns.size, ns.steps = 6, 256, 4
    asyncio.run(main(ns))
