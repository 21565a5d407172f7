"""LoRA figures, measured side by side in one run on the tiny model (CPU), through Engine.render (the call the
worker makes):

1. the extra cost of one LoRA per image: the same batch plain vs with one LoRA (median of --runs);
2. switching adapters between batches: the first load of an adapter, then a switch (set_adapters /
   disable_lora) alone, and batches alternating plain / LoRA A / LoRA B vs the same set each time.

    .venv/bin/python bench/lora.py [--size 512] [--steps 4] [--images 4] [--runs 5]
"""

from __future__ import annotations

import sys
from pathlib import Path

# Run as a script, bench/ would be first on sys.path; put the repository root there instead.
sys.path[0] = str(Path(__file__).resolve().parents[1])

import os  # noqa: E402
import statistics  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from bench.common import engine_parser, timed_renders  # noqa: E402
from generation.engine import Engine  # noqa: E402
from generation.loras import write_random_lora  # noqa: E402
from generation.models import ModelRegistry  # noqa: E402
from generation.request import RenderRequest  # noqa: E402


def _req(size: int, steps: int, images: int, loras: tuple[tuple[str, float], ...] = ()) -> RenderRequest:
    return RenderRequest(prompt="a lighthouse at dusk", model="tiny", width=size, height=size, steps=steps,
                         guidance=7.0, sampler="euler", seeds=tuple(range(images)), loras=loras)


def main() -> None:
    parser = engine_parser(__doc__)
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        data = Path(tmp)
        registry = ModelRegistry([("tiny", "tiny")], data, device="cpu", lora_dir=data / "loras")
        engine = Engine(registry)
        pipe = registry.pipeline("tiny")
        for seed, name in enumerate(("a", "b"), start=1):
            write_random_lora(pipe, data / "loras" / "sd15" / f"{name}.safetensors", seed=seed)
        plain = _req(args.size, args.steps, args.images)
        one = _req(args.size, args.steps, args.images, (("a", 0.8),))
        other = _req(args.size, args.steps, args.images, (("b", 0.8),))
        engine.render([plain])  # warm: first call pays one-off allocations

        # 2a. First load of each adapter (the only time a file is read).
        load_s = []
        for lora in ("a", "b"):
            started = time.perf_counter()
            registry.use_loras("tiny", ((lora, 0.8),))
            load_s.append(time.perf_counter() - started)

        # 1. Plain vs one LoRA, interleaved so load drift hits both.
        plain_s, lora_s = [], []
        for _ in range(args.runs):
            plain_s.append(timed_renders(engine, plain))
            lora_s.append(timed_renders(engine, one))
        p, lo = statistics.median(plain_s), statistics.median(lora_s)
        print(f"{args.images}x{args.size}², {args.steps} steps, median of {args.runs}: plain {p:.3f} s, "
              f"one LoRA {lo:.3f} s: {lo / p:.2f}x ({(lo - p) / args.images * 1000:+.0f} ms per image)")

        # 2b. A switch alone, and batches that switch each time vs keep one set.
        switch_s = []
        for i in range(20):
            started = time.perf_counter()
            registry.use_loras("tiny", ((("a", "b")[i % 2], 0.8),) if i % 3 else ())
            switch_s.append(time.perf_counter() - started)
        same_s = [timed_renders(engine, one) for _ in range(args.runs)]
        cycle = [plain, one, other]
        alternating_s = [timed_renders(engine, cycle[i % 3]) for i in range(args.runs)]
        same, alternating = statistics.median(same_s), statistics.median(alternating_s)
        print(f"adapter first load {min(load_s) * 1000:.1f}-{max(load_s) * 1000:.1f} ms; a switch "
              f"(set_adapters / disable_lora) median {statistics.median(switch_s) * 1000:.2f} ms, "
              f"max {max(switch_s) * 1000:.2f} ms")
        print(f"batches with one LoRA set {same:.3f} s vs alternating plain / A / B {alternating:.3f} s: "
              f"{alternating / same:.2f}x")
        # Shared cores make every CPU figure above noisy: say how busy the machine was.
        print(f"load average (1 min) at the end: {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores")


if __name__ == "__main__":
    main()
