"""Does a diffusers call run slower off the main thread? The bot renders in a worker thread (the event loop
owns the main thread), and bench/e2e.py shows its render 1.4-1.5x slower than the bare call once torch uses
both cores, while with one torch thread the two are equal. This times the same pipeline call, tiny model,
4 x 512², on the main thread and on a ThreadPoolExecutor thread (as generation/worker.py runs it), side by
side in one process, for 1 torch thread and for every core.

Run: PYTHONPATH=. HF_HUB_OFFLINE=1 .venv/bin/python bench/render_thread.py [--steps 20] [--runs 3]
"""

from __future__ import annotations

import argparse
import concurrent.futures
import os
import tempfile
import time
from pathlib import Path

import torch
from diffusers import StableDiffusionPipeline

from generation.tiny import ensure_tiny_model


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    folder = ensure_tiny_model(Path(tempfile.gettempdir()) / "atelier-render-thread")
    pipe = StableDiffusionPipeline.from_pretrained(folder, local_files_only=True)
    pipe.set_progress_bar_config(disable=True)

    def call() -> float:
        start = time.perf_counter()
        pipe("a lighthouse at dusk", num_inference_steps=args.steps, num_images_per_prompt=4, height=512,
             width=512, generator=torch.Generator().manual_seed(1))
        return time.perf_counter() - start

    print(f"bench/render_thread.py: 4 x 512², {args.steps} steps, tiny model, best of {args.runs}; "
          f"{os.cpu_count()} cores; load average {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    for threads in sorted({1, os.cpu_count() or 1}):
        torch.set_num_threads(threads)
        # A fresh thread: OpenMP's thread count is per thread, and a thread made before this call keeps the
        # count it started with (torch.set_num_threads changes the calling thread and threads made later).
        pool = concurrent.futures.ThreadPoolExecutor(1)
        call()
        pool.submit(call).result()  # warm both threads
        main_s = min(call() for _ in range(args.runs))
        pool_s = min(pool.submit(call).result() for _ in range(args.runs))
        print(f"  torch threads {threads}: main thread {main_s:.3f} s, worker thread {pool_s:.3f} s: "
              f"ratio {pool_s / main_s:.2f}")


if __name__ == "__main__":
    main()
