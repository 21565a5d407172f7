"""Engine figures, measured side by side in one run on the tiny model (CPU):

1. 8 compatible requests in one batched call vs one by one (ratio);
2. preview cost per step (x0 projection to RGB) vs the step itself;
3. max asyncio event-loop lag while a render runs in a worker thread (vs idle).

    .venv/bin/python bench/engine.py [--size 512] [--steps 4]
"""

from __future__ import annotations

import sys
from pathlib import Path

# Run as a script, bench/ would be first on sys.path and its siblings (bench/queue.py) would shadow
# standard modules; put the repository root there instead.
sys.path[0] = str(Path(__file__).resolve().parents[1])

import argparse  # noqa: E402
import asyncio  # noqa: E402
import os  # noqa: E402
import statistics  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from concurrent.futures import ThreadPoolExecutor  # noqa: E402

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from generation.engine import Engine  # noqa: E402
from generation.models import ModelRegistry  # noqa: E402
from generation.previews import latent_to_preview  # noqa: E402
from generation.request import RenderRequest  # noqa: E402


def _req(seed: int, size: int, steps: int, prompt: str = "a lighthouse at dusk") -> RenderRequest:
    return RenderRequest(
        prompt=prompt,
        model="tiny",
        width=size,
        height=size,
        steps=steps,
        guidance=7.0,
        sampler="euler",
        seeds=(seed,),
    )


def _best(fn: object, repeat: int) -> float:
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn()  # type: ignore[operator]
        times.append(time.perf_counter() - start)
    return min(times)


async def _max_lag(
    seconds: float | None, work: object = None, interval: float = 0.005
) -> tuple[float, float]:
    """Max and mean overshoot of a 5 ms sleep, while `work` runs in a worker thread (or for `seconds`)."""
    loop = asyncio.get_running_loop()
    lags: list[float] = []
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="render") as pool:
        task: asyncio.Future[object] | None = loop.run_in_executor(pool, work) if work is not None else None  # type: ignore[arg-type]
        end = loop.time() + (seconds or 0)
        while (task is not None and not task.done()) or (task is None and loop.time() < end):
            before = loop.time()
            await asyncio.sleep(interval)
            lags.append(loop.time() - before - interval)
        if task is not None:
            await task
    return max(lags), statistics.mean(lags)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--size", type=int, default=512)
    parser.add_argument("--steps", type=int, default=4)
    parser.add_argument("--repeat", type=int, default=2)
    args = parser.parse_args()
    import torch

    with tempfile.TemporaryDirectory() as tmp:
        registry = ModelRegistry([("tiny", "tiny")], Path(tmp), device="cpu")
        engine = Engine(registry)
        t0 = time.perf_counter()
        engine.warm_up()
        print(
            f"machine: {os.cpu_count()} cores, torch {torch.__version__}, {torch.get_num_threads()} threads"
        )
        print(f"load + warm-up of the tiny model: {time.perf_counter() - t0:.2f} s")
        size, steps = args.size, args.steps
        one = _best(lambda: engine.render([_req(1, size, steps)]), args.repeat)
        print(f"\n1 request, {size}x{size}, {steps} steps: {one:.3f} s")

        # 1. batching (at the requested size, and small where per-call overhead dominates)
        requests = [_req(100 + i, size, steps, f"prompt number {i}") for i in range(8)]
        for bsize in (size, 128):
            reqs = [_req(100 + i, bsize, steps, f"prompt number {i}") for i in range(8)]
            solo = _best(lambda reqs=reqs: [engine.render([r]) for r in reqs], args.repeat)
            batched = _best(lambda reqs=reqs: engine.render(reqs), args.repeat)
            print(f"{bsize}x{bsize}: 8 requests one by one: {solo:.3f} s ({solo / 8:.3f} s/image)")
            print(f"{bsize}x{bsize}: 8 requests batched:    {batched:.3f} s ({batched / 8:.3f} s/image)")
            print(f"{bsize}x{bsize}: batching speed-up: {solo / batched:.2f}x")

        # 2. previews
        # Alternate the two so a noisy neighbour hits both alike; keep the best of each.
        plain_times, prev_times = [], []
        for _ in range(max(5, args.repeat)):
            plain_times.append(_best(lambda: engine.render([_req(5, size, steps)]), 1))
            prev_times.append(
                _best(lambda: engine.render([_req(5, size, steps)], on_progress=lambda s, t, p: None), 1)
            )
        plain, with_prev = min(plain_times), min(prev_times)
        latent = torch.randn(4, size // 8, size // 8)
        n = 200
        start = time.perf_counter()
        for _ in range(n):
            latent_to_preview(latent, "sd15")
        projection = (time.perf_counter() - start) / n
        print(f"\npreview projection alone ({size // 8}x{size // 8} latent): {projection * 1000:.3f} ms")
        print(f"whole render / steps, without previews: {plain / steps * 1000:.1f} ms/step")
        print(
            f"whole render / steps, with previews:    {with_prev / steps * 1000:.1f} ms/step "
            f"(difference {(with_prev - plain) / steps * 1000:+.2f} ms/step)"
        )

        # 3. event-loop lag
        idle_max, idle_mean = asyncio.run(_max_lag(1.0))
        busy_max, busy_mean = asyncio.run(_max_lag(None, lambda: engine.render(requests)))
        print(
            f"\nevent-loop lag idle (1 s):                          max {idle_max * 1000:.1f} ms, "
            f"mean {idle_mean * 1000:.2f} ms"
        )
        print(
            f"event-loop lag while 8 images render in a thread:   max {busy_max * 1000:.1f} ms, "
            f"mean {busy_mean * 1000:.2f} ms"
        )


if __name__ == "__main__":
    main()
