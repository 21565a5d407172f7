"""The member's view: /imagine through a separate `atelier run` process, against the bare diffusers call.

Three processes, as in production: this one hosts the sandbox Discord server and acts as the member
(the sandbox's user API); the bot runs as `python -m bot.cli run` (exactly `atelier run`) on its own temp
data dir and the tiny model; the bare diffusers call runs in a third process on the same tiny model
folder, with the bot's default sampler. Runs alternate bare / bot, side by side, best of N each.

Prints, for torch on one thread in both processes and for the default threads:
- time from sending /imagine (4 x 512², 8 and 20 steps) to the grid visible in the sandbox (an attachment
  on the job's message), and to the final message (with its buttons), ÷ the bare call;
- the fixed cost after the render (grid visible − the render's end as the bot recorded it in SQLite)
  for 1 / 2 / 4 images and for an upscale (U1), best of N;
- ack latency p50 / p99 of /imagine while jobs render, and the bot's max event-loop lag (it logs the
  worst lag since the previous delivery with each delivery).

`--settings spare` gives the bot's render all cores but one (ATELIER_TORCH_THREADS = cores - 1, the default
before issue 15's torch-thread change), against the bare call on every core; `--settings malloc` runs the bot
(only) with GLIBC_TUNABLES=MALLOC_TUNABLES below, default threads.

Run: .venv/bin/python bench/e2e.py [--runs 5] [--steps 8,20] [--acks 40] [--settings one,default,spare]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import re
import signal
import sqlite3
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

PROMPT = "a lighthouse at dusk"
RESULT_NAME = re.compile(r"^(?:SPOILER_)?atelier_(\d+)\.\w+$")
THREADS_LINE = re.compile(r"torch uses (\d+) threads")
LAG_LINE = re.compile(r"max event-loop lag since the previous delivery ([\d.]+) ms")
THREAD_VARS = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "ATELIER_TORCH_THREADS", "GLIBC_TUNABLES")
# --settings malloc: glibc's malloc serves the render's large buffers from its heap and keeps freed memory,
# instead of a fresh mmap (page faults) per buffer: an operator's environment setting, the bot process only.
MALLOC_TUNABLES = "glibc.malloc.mmap_threshold=4294967296:glibc.malloc.trim_threshold=17179869184"


# -- the bare call, in its own process -------------------------------------------------------------------
def bare_server(folder: str) -> None:
    """Load the tiny model folder as diffusers does, then time one 4-image call per request on stdin."""
    import torch
    from diffusers import StableDiffusionPipeline

    from generation.families import SD15
    from generation.samplers import make_scheduler

    threads = os.environ.get("ATELIER_TORCH_THREADS")
    if threads:
        torch.set_num_threads(int(threads))
    pipe = StableDiffusionPipeline.from_pretrained(folder, local_files_only=True, safety_checker=None,
                                                   requires_safety_checker=False)
    pipe.set_progress_bar_config(disable=True)
    base = pipe.scheduler.config

    def call(count: int, steps: int, seed: int) -> float:
        seeds = [seed + i for i in range(count)]
        # The bot's default sampler, made fresh per call as the engine does.
        pipe.scheduler = make_scheduler(SD15.default_sampler, base, None, seeds)
        generators = [torch.Generator().manual_seed(s) for s in seeds]
        start = time.perf_counter()
        pipe(prompt=[PROMPT] * count, negative_prompt=[""] * count, width=512, height=512,
             num_inference_steps=steps, guidance_scale=7.0, generator=generators, output_type="pil")
        return time.perf_counter() - start

    call(4, 2, 1)  # warm caches, as the bot's warm-up does
    print(json.dumps({"ready": True, "threads": torch.get_num_threads()}), flush=True)
    for line in sys.stdin:
        count, steps, seed = (int(x) for x in line.split())
        print(json.dumps({"seconds": call(count, steps, seed)}), flush=True)


class Bare:
    def __init__(self, proc: asyncio.subprocess.Process) -> None:
        self.proc = proc

    @classmethod
    async def start(cls, folder: Path, env: dict[str, str]) -> tuple[Bare, int]:
        proc = await asyncio.create_subprocess_exec(
            sys.executable, __file__, "--bare-server", str(folder), env=env,
            stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE)
        bare = cls(proc)
        return bare, (await bare._read())["threads"]

    async def _read(self) -> dict[str, Any]:
        assert self.proc.stdout is not None
        line = await self.proc.stdout.readline()
        if not line:
            raise RuntimeError("the bare-call process ended")
        return dict(json.loads(line))

    async def call(self, count: int, steps: int, seed: int) -> float:
        assert self.proc.stdin is not None
        self.proc.stdin.write(f"{count} {steps} {seed}\n".encode())
        await self.proc.stdin.drain()
        return float((await self._read())["seconds"])

    async def stop(self) -> None:
        if self.proc.stdin is not None:
            self.proc.stdin.close()
        await self.proc.wait()


# -- the member's side: the sandbox, with the time each result became visible ---------------------------
def timed_sandbox() -> Any:
    from sandbox import Sandbox

    class TimedSandbox(Sandbox):
        """Notes (wall clock) when a job's result image first appears on a message, and when the
        message first carries it with buttons (the final delivery)."""

        def __init__(self) -> None:
            super().__init__(keep_uploads=False)
            self.visible: dict[int, float] = {}
            self.final: dict[int, float] = {}

        def _note(self, message: Any) -> None:
            now = time.time()
            for attachment in message.attachments:
                match = RESULT_NAME.match(attachment.filename)
                if match:
                    job = int(match.group(1))
                    self.visible.setdefault(job, now)
                    if message.components:
                        self.final.setdefault(job, now)

        async def create_message(self, message: Any) -> Any:
            self._note(message)
            return await super().create_message(message)

        async def message_edited(self, message: Any, before: dict[str, Any]) -> None:
            self._note(message)
            await super().message_edited(message, before)

    return TimedSandbox()


@dataclass
class Figures:
    threads_bot: str = ""
    threads_bare: int = 0
    bare: dict[int, list[float]] = field(default_factory=dict)  # steps -> seconds
    visible: dict[int, list[float]] = field(default_factory=dict)
    final: dict[int, list[float]] = field(default_factory=dict)
    render_in_bot: dict[int, list[float]] = field(default_factory=dict)
    fixed: dict[str, list[float]] = field(default_factory=dict)  # "1 image" / ... / "upscale"
    acks: list[float] = field(default_factory=list)
    lag_ms: list[float] = field(default_factory=list)
    load: str = ""  # the machine's load average when this setting's runs ended


class BotProcess:
    """`atelier run` in its own process, pointed at the sandbox."""

    def __init__(self, sandbox: Any, data_dir: Path, env: dict[str, str]) -> None:
        self.sandbox = sandbox
        self.data_dir = data_dir
        self.env = {
            **env,
            "DISCORD_TOKEN": sandbox.bot_token,
            "ATELIER_DATA_DIR": str(data_dir),
            "ATELIER_DISCORD_API_BASE": sandbox.api_base,
            "ATELIER_DISCORD_GATEWAY_URL": sandbox.gateway_url,
            "ATELIER_DEV_GUILD_ID": str(sandbox.guild.id),
            "ATELIER_MODEL": "tiny",
            "ATELIER_LOG_LEVEL": "INFO",
            "ATELIER_QUEUE_MAX_PER_USER": "500",
            "ATELIER_QUEUE_MAX_TOTAL": "1000",
        }
        self.log_path = data_dir / "bot.log"
        self.proc: asyncio.subprocess.Process | None = None

    async def start(self) -> None:
        log = self.log_path.open("wb")
        self.proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "bot.cli", "run", env=self.env, cwd=str(ROOT),
            stdout=log, stderr=log)
        log.close()
        guild = self.sandbox.guild
        await self.sandbox.wait_for(
            lambda: any(c["name"] == "imagine" for c in self.sandbox.commands(guild)), timeout=600)
        await asyncio.sleep(0.5)  # READY and GUILD_CREATE processed

    async def stop(self) -> None:
        if self.proc is not None and self.proc.returncode is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                await asyncio.wait_for(self.proc.wait(), 60)
            except TimeoutError:
                self.proc.kill()
                await self.proc.wait()

    def job(self, job_id: int) -> sqlite3.Row:
        db = sqlite3.connect(f"file:{self.data_dir / 'atelier.db'}?mode=ro", uri=True)
        db.row_factory = sqlite3.Row
        try:
            row = db.execute("SELECT * FROM jobs WHERE id = ?", (job_id,)).fetchone()
        finally:
            db.close()
        return row

    def torch_threads(self) -> str:
        """What the bot applied at start (ATELIER_TORCH_THREADS or its default), from its log."""
        found = THREADS_LINE.search(self.log_path.read_text(errors="replace"))
        return found.group(1) if found else "torch default"

    def lags_ms(self) -> list[float]:
        return [float(m.group(1)) for m in LAG_LINE.finditer(self.log_path.read_text(errors="replace"))]


class Member:
    def __init__(self, sandbox: Any, bot: BotProcess) -> None:
        self.sandbox = sandbox
        self.bot = bot
        self.user = sandbox.users["alice"]
        self.channel = sandbox.channel("general")

    async def _until_new(self, before: set[int], sent: float) -> tuple[int, float, float]:
        sb = self.sandbox

        def done() -> int | None:
            return next((j for j in sorted(sb.final) if j not in before), None)

        job = await sb.wait_for(done, timeout=600)
        return job, sb.visible[job] - sent, sb.final[job] - sent

    async def imagine(self, count: int, steps: int, seed: int) -> tuple[int, float, float, float]:
        """(job id, seconds to the grid visible, seconds to the final message, ack latency)."""
        before = set(self.sandbox.final)
        sent = time.time()
        interaction = await self.sandbox.slash(self.user, self.channel, "imagine", {
            "prompt": f"{PROMPT} --seed {seed} --steps {steps} --n {count} --cfg 7 --ar 1:1"})
        await interaction.wait_ack()
        job, visible, final = await self._until_new(before, sent)
        return job, visible, final, interaction.ack_latency or 0.0

    async def upscale(self, job_id: int) -> int:
        message = next(m for m in reversed(self.sandbox.messages(self.channel))
                       if any(RESULT_NAME.match(a.filename) and RESULT_NAME.match(a.filename).group(1)
                              == str(job_id) for a in m.attachments))
        button = next(b for b in message.buttons() if b.get("label") == "U1")
        before = set(self.sandbox.final)
        sent = time.time()
        click = await self.sandbox.click(self.user, message, button["custom_id"])
        await click.wait_ack()
        job, _, _ = await self._until_new(before, sent)
        return job

    def after_render(self, job_id: int) -> tuple[float, float]:
        """(the render's seconds in the bot, seconds from the render's end to the grid visible)."""
        row = self.bot.job(job_id)
        render_end = row["started_at"] + row["render_seconds"]
        return row["render_seconds"], self.sandbox.visible[job_id] - render_end


async def measure(setting: str, args: argparse.Namespace, tmp: Path) -> Figures:
    from generation.tiny import ensure_tiny_model

    env = {k: v for k, v in os.environ.items() if k not in THREAD_VARS}
    env["HF_HUB_OFFLINE"] = "1"
    env["PYTHONPATH"] = str(ROOT)
    if setting == "one":
        env.update({"OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "ATELIER_TORCH_THREADS": "1"})
    elif setting == "spare":  # the bot's render on all cores but one (a core left to the event loop)
        env["ATELIER_TORCH_THREADS"] = str(max(1, (os.cpu_count() or 1) - 1))
    elif setting == "malloc":
        env["GLIBC_TUNABLES"] = MALLOC_TUNABLES
    data_dir = tmp / f"data-{setting}"
    folder = await asyncio.to_thread(ensure_tiny_model, data_dir)  # the bot's tiny model, written once
    figures = Figures()

    sandbox = timed_sandbox()
    await sandbox.start()
    # The bare call keeps torch's default (every core) unless both sides are limited to one thread.
    bare_env = env if setting == "one" else {k: v for k, v in env.items() if k not in THREAD_VARS}
    bare, figures.threads_bare = await Bare.start(folder, bare_env)
    bot = BotProcess(sandbox, data_dir, env)
    try:
        await bot.start()
        member = Member(sandbox, bot)
        figures.threads_bot = bot.torch_threads()
        for steps in args.steps:  # warm the bot's path too (first upload, first edit)
            await member.imagine(4, steps, 1)
        seed = 100
        for _ in range(args.runs):
            for steps in args.steps:
                seed += 10
                figures.bare.setdefault(steps, []).append(await bare.call(4, steps, seed))
                job, visible, final, ack = await member.imagine(4, steps, seed)
                figures.visible.setdefault(steps, []).append(visible)
                figures.final.setdefault(steps, []).append(final)
                figures.render_in_bot.setdefault(steps, []).append(member.after_render(job)[0])
                figures.acks.append(ack)
        steps = min(args.steps)
        for _ in range(args.runs):
            for count in (1, 2, 4):
                seed += 10
                job, _, _, ack = await member.imagine(count, steps, seed)
                figures.acks.append(ack)
                figures.fixed.setdefault(f"{count} image{'s' if count > 1 else ''}", []).append(
                    member.after_render(job)[1])
            up = await member.upscale(job)
            figures.fixed.setdefault("upscale (U1)", []).append(member.after_render(up)[1])
        # Acknowledgements while renders run: one-image 2-step jobs sent back to back.
        for i in range(args.acks):
            interaction = await sandbox.slash(member.user, member.channel, "imagine",
                                              {"prompt": f"ack test {i} --steps 2 --n 1"})
            await interaction.wait_ack()
            figures.acks.append(interaction.ack_latency or 0.0)
        await sandbox.wait_for(lambda: len(sandbox.final) >= len(sandbox.visible) and _all_done(bot), 600)
        figures.lag_ms = bot.lags_ms()
        figures.load = " ".join(f"{x:.1f}" for x in os.getloadavg())
    finally:
        await bot.stop()
        await bare.stop()
        await sandbox.stop()
    return figures


def _all_done(bot: BotProcess) -> bool:
    db = sqlite3.connect(f"file:{bot.data_dir / 'atelier.db'}?mode=ro", uri=True)
    try:
        (n,) = db.execute("SELECT count(*) FROM jobs WHERE delivered_at IS NULL").fetchone()
    finally:
        db.close()
    return bool(n == 0)


def report(results: dict[str, Figures], args: argparse.Namespace) -> None:
    settings = list(results)
    load = " ".join(f"{x:.2f}" for x in os.getloadavg())
    print(f"bench/e2e.py: 4 x 512², tiny model, best of {args.runs}; {os.cpu_count()} cores; "
          f"load average {load}")
    labels = {"one": "one thread", "malloc": "default + malloc tunables"}
    head = "".join(f"{labels.get(s, s + ' threads'):>34}" for s in settings)
    print(f"{'':38}{head}")

    def row(label: str, cells: list[str]) -> None:
        print(f"  {label:36}" + "".join(f"{c:>34}" for c in cells))

    row("torch threads: bare / bot", [f"{f.threads_bare} / {f.threads_bot}" for f in results.values()])
    for steps in args.steps:
        print(f"  {steps} steps")
        bare = [min(f.bare[steps]) for f in results.values()]
        row("bare diffusers call", [f"{b:.3f} s" for b in bare])
        row("render inside the bot", [f"{min(f.render_in_bot[steps]):.3f} s" for f in results.values()])
        for what in ("visible", "final"):
            cells = []
            for f, b in zip(results.values(), bare, strict=True):
                best = min(getattr(f, what)[steps])
                cells.append(f"{best:.3f} s  ratio {best / b:.3f}")
            row("/imagine → grid visible" if what == "visible" else "/imagine → final (buttons)", cells)
    print(f"  fixed cost after the render (grid visible − render end), {min(args.steps)} steps, best")
    for key in ("1 image", "2 images", "4 images", "upscale (U1)"):
        row(key, [f"{min(f.fixed[key]) * 1000:.0f} ms (median {statistics.median(f.fixed[key]) * 1000:.0f})"
                  for f in results.values()])
    cells = []
    for f in results.values():
        acks = sorted(f.acks)
        p99 = acks[min(len(acks) - 1, int(0.99 * len(acks)))] * 1000
        cells.append(f"p50 {statistics.median(acks) * 1000:.1f} / p99 {p99:.1f} ms")
    row(f"ack latency (/imagine, {len(next(iter(results.values())).acks)})", cells)
    row("max event-loop lag in the bot", [
        f"{max(f.lag_ms, default=0):.1f} ms (per job: median {statistics.median(f.lag_ms or [0]):.1f})"
        for f in results.values()])
    row("load average at the end", [f.load for f in results.values()])
    print("goals: one thread visible ÷ bare <= 1.03, default threads <= 1.05; "
          "ack p99 <= 100 ms; lag <= 50 ms")


async def main(args: argparse.Namespace) -> None:
    tmp = Path(tempfile.mkdtemp(prefix="atelier-e2e-"))
    results: dict[str, Figures] = {}
    for setting in args.settings:
        results[setting] = await measure(setting, args, tmp)
    report(results, args)
    with contextlib.suppress(OSError):
        import shutil

        shutil.rmtree(tmp)


def parse() -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--steps", type=lambda s: [int(x) for x in s.split(",")], default=[8, 20])
    parser.add_argument("--acks", type=int, default=40)
    parser.add_argument("--settings", type=lambda s: s.split(","), default=["one", "default"])
    parser.add_argument("--bare-server", default=None, help=argparse.SUPPRESS)
    return parser.parse_args()


if __name__ == "__main__":
    arguments = parse()
    if arguments.bare_server:
        bare_server(arguments.bare_server)
    else:
        asyncio.run(main(arguments))
