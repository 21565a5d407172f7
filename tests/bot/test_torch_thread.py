"""On CPU each thread that runs torch's parallel ops gets its own OpenMP team, and once a process holds two
teams libgomp throttles every one of them (renders measured 0.77 s vs 1.0 s, bench/render_thread.py). The
bot's start-up (warm-up), its renders, a member's upload check and a caption must all run on one thread:
then, once the model has warmed up, no later model work starts another team, i.e. adds threads to the
process beyond the Python threads it starts.

Run in a fresh process (this test process has run torch on many threads already), through the same
pieces `atelier run` uses: Services.open (warm-up), the scheduler, Services' model calls."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from generation.tiny import ensure_tiny_model, tiny_model_dir

ROOT = Path(__file__).resolve().parents[2]

SCRIPT = r"""
import asyncio, json, os, threading
from PIL import Image
from bot.config import Settings
from bot.services import Services
from generation.events import JobDone, JobFailed
from generation.request import RenderRequest
from generation.scheduler import JobOwner
from generation.threads import current


def native_threads():
    # Threads of this process that Python did not start: OpenMP's team workers and torch's own.
    python = {t.native_id for t in threading.enumerate()}
    return len([t for t in os.listdir("/proc/self/task") if int(t) not in python])


async def main():
    default = current()  # torch's own count, before the bot sets any
    settings = Settings(_env_file=None)
    services = await Services.open(settings)  # the model loads and warms up here
    counts = {"warm": native_threads()}
    await services.start()
    try:
        events = services.scheduler.subscribe()
        job = await services.scheduler.submit(RenderRequest(
            prompt="a lighthouse at dusk", model="tiny", width=256, height=256, steps=2, guidance=5.0,
            sampler="euler", seeds=(1, 2)), JobOwner(1))
        async for event in events:
            if isinstance(event, (JobDone, JobFailed)) and event.job_id == job:
                break
        counts["render"] = native_threads()
        upload = Image.new("RGB", (512, 512), (200, 120, 40))
        await services.looks_nsfw("tiny", upload)
        counts["upload check"] = native_threads()
        caption = await services.model_call(services.captioner.describe, upload)
        counts["caption"] = native_threads()
        engine = services.engine
        print(json.dumps({"done": isinstance(event, JobDone), "captions": len(caption), "threads": counts,
                          "render": await engine.call(current), "side": await engine.side_call(current),
                          "main": current(), "default": default}))
    finally:
        await services.close()


asyncio.run(main())
"""


def test_the_bot_runs_torch_on_one_thread(tiny_data_dir: Path, tmp_path: Path) -> None:
    ensure_tiny_model(tiny_data_dir)
    (tmp_path / "models").mkdir()
    tiny_model_dir(tmp_path).symlink_to(tiny_model_dir(tiny_data_dir), target_is_directory=True)
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("ATELIER_", "OMP_", "MKL_", "GOMP_"))}
    env.update({"ATELIER_MODEL": "tiny", "ATELIER_DEVICE": "cpu", "ATELIER_DATA_DIR": str(tmp_path),
                "ATELIER_CAPTION_MODEL": "tiny", "ATELIER_TORCH_THREADS": "3", "HF_HUB_OFFLINE": "1",
                "PYTHONPATH": str(ROOT)})
    out = subprocess.run([sys.executable, "-c", SCRIPT], env=env, cwd=str(ROOT), capture_output=True,
                         text=True, timeout=600)
    assert out.returncode == 0, out.stderr[-3000:]
    result = json.loads(out.stdout.strip().splitlines()[-1])
    assert result["done"] and result["captions"] == 4
    # ATELIER_TORCH_THREADS sets the torch thread's count only (command calls run there too), and the
    # process-wide default (what any other thread would start with) stays torch's own, every core.
    assert (result["render"], result["side"], result["main"]) == (3, 3, result["default"]), result
    # Three torch threads: a team is its thread plus two OpenMP workers. The old bot warmed up in asyncio's
    # default executor, rendered in the worker's own thread (+2), checked uploads and captioned in
    # default-executor threads.
    counts = result["threads"]
    assert counts["render"] == counts["upload check"] == counts["caption"] == counts["warm"], counts
