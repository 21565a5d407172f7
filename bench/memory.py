"""Memory of the bot around the engine, measured side by side in one process on the tiny model.

Prints:
- peak resident memory added by a 4-image 512x512 job: the bare pipeline call vs the same job as an
  /imagine through sandbox + real discord.py + bot (ratio);
- resident memory growth per job over many jobs and button clicks after a warm-up (a leak shows here).

Peaks come from the kernel's VmHWM, reset before each measurement through /proc/self/clear_refs (Linux).

Run: .venv/bin/python bench/memory.py [--steps 20] [--jobs 40]
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.bot import bare_pipeline, start_bot, warm_engine
from bot.endpoint import restore
from sandbox import Sandbox
from tests.bot.helpers import button, results


def _status_kb(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise RuntimeError(f"no {field} in /proc/self/status")


def rss_mb() -> float:
    return _status_kb("VmRSS") / 1024


def reset_peak() -> float:
    """Start a new peak window; returns the resident MB now."""
    gc.collect()
    Path("/proc/self/clear_refs").write_text("5")
    return rss_mb()


def peak_mb() -> float:
    return _status_kb("VmHWM") / 1024


async def imagine_and_wait(sandbox: Sandbox, prompt: str) -> object:
    alice, general = sandbox.users["alice"], sandbox.channel("general")
    before = len(results(sandbox, general))
    interaction = await sandbox.slash(alice, general, "imagine", {"prompt": prompt})
    await interaction.wait_ack()
    await sandbox.wait_for(lambda: len(results(sandbox, general)) > before, timeout=600)
    return results(sandbox, general)[-1]


async def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--jobs", type=int, default=40)
    args = parser.parse_args()

    tmp = Path(tempfile.mkdtemp(prefix="atelier-bench-"))
    engine = await warm_engine(tmp)
    loaded = rss_mb()

    # The sandbox runs in this process: it must not keep every uploaded file, or its own memory would
    # be counted as the bot's.
    sandbox = Sandbox(keep_uploads=False)
    app = await start_bot(engine, sandbox, tmp)
    await imagine_and_wait(sandbox, "warm up --steps 2 --n 4 --seed 1")
    with_bot = rss_mb()

    # Side by side: the bare call, then the same job through the whole bot.
    bare_peaks, bot_peaks = [], []
    for run in range(2):
        start = reset_peak()
        await asyncio.to_thread(bare_pipeline, engine, args.steps)
        bare_peaks.append(peak_mb() - start)
        start = reset_peak()
        await imagine_and_wait(sandbox, f"a lighthouse --seed {7 + run} --steps {args.steps} --n 4 --cfg 7")
        bot_peaks.append(peak_mb() - start)

    # Growth over many small jobs and clicks, after a warm-up of the same mix.
    general, bob = sandbox.channel("general"), sandbox.users["bob"]

    async def mix(count: int, offset: int) -> None:
        for i in range(count):
            grid = await imagine_and_wait(sandbox, f"job {offset + i} --steps 3 --n 2 --ar 1:1 --seed {i}")
            if i % 4 == 0:  # an upscale click now and then: img2img path, a new message
                before = len(results(sandbox, general))
                click = await sandbox.click(bob, grid, button(grid, "U1"))  # type: ignore[arg-type]
                await click.wait_ack()
                await sandbox.wait_for(lambda before=before: len(results(sandbox, general)) > before,
                                       timeout=600)

    await mix(10, 0)
    gc.collect()
    warm = rss_mb()
    await mix(args.jobs, 1000)
    gc.collect()
    after = rss_mb()
    await app.stop()
    await sandbox.stop()
    restore()

    bare, bot = max(bare_peaks), max(bot_peaks)
    per_job_kb = (after - warm) * 1024 / args.jobs
    print(f"resident: engine loaded {loaded:.0f} MB; with sandbox + bot + one job {with_bot:.0f} MB")
    print(f"4 x 512x512, {args.steps} steps: peak added, max of 2 runs")
    print(f"  bare pipeline call    {bare:7.1f} MB")
    print(f"  /imagine end to end   {bot:7.1f} MB   ratio {bot / bare:.2f}")
    print(f"growth over {args.jobs} jobs (+{args.jobs // 4} upscales) after a warm-up of 10: resident "
          f"{warm:.0f} -> {after:.0f} MB ({per_job_kb:+.0f} KB per job)")


if __name__ == "__main__":
    asyncio.run(main())
