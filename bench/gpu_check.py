"""Device check: what only a real GPU can show about dtypes, VAE tiling and out-of-memory, on the tiny
models (a few minutes at most). Run it on the card the bot will use:

    .venv/bin/python bench/gpu_check.py            (or: make gpu-check)
    .venv/bin/python bench/gpu_check.py --device cpu --dtype bfloat16

Each line is `[ok]`, `[FAIL]`, `[info]` (a figure) or `[needs CUDA]` (what this device cannot show).
On CUDA: dtypes before and after img2img; the tiling flag during a 2048² upscale; an out-of-memory forced
with `torch.cuda.set_per_process_memory_fraction` during an SDXL upscale, then a normal render; batched vs
solo pixel difference; a render with command model calls between its steps (same pixels); steps/s without
previews, with them at most once a second and with one every step; ATELIER_COMPILE's warm-up (graphs,
recompiles, then jobs at planned sizes that must recompile nothing); ATELIER_OFFLOAD=model|sequential with
their peak memory. On CPU the same checks run where they apply (reduced dtypes, a small tiling ceiling, the
out-of-memory raised from a hook inside the real VAE; compile only with --compile, minutes per shape); the
exit status is 1 if any check failed.
"""

from __future__ import annotations

import sys
from pathlib import Path

# Run as a script, bench/ would be first on sys.path and its siblings (bench/queue.py) would shadow
# standard modules; put the repository root there instead.
sys.path[0] = str(Path(__file__).resolve().parents[1])

import argparse  # noqa: E402
import logging  # noqa: E402
import os  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from collections.abc import Iterator  # noqa: E402
from contextlib import contextmanager  # noqa: E402
from dataclasses import replace  # noqa: E402
from typing import Any  # noqa: E402

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import numpy as np  # noqa: E402
import torch  # noqa: E402
from PIL import Image  # noqa: E402

from generation.engine import Engine, warm_up_plan  # noqa: E402
from generation.errors import RenderError  # noqa: E402
from generation.models import VAE_TILE_PIXELS, ModelRegistry, pick_device  # noqa: E402
from generation.request import RenderRequest  # noqa: E402
from generation.validate import ASPECTS, size_for, upscale_of  # noqa: E402

MODELS = [("tiny", "tiny"), ("tiny-xl", "tiny-xl")]
failures: list[str] = []


def report(status: str, text: str) -> None:
    if status == "FAIL":
        failures.append(text)
    print(f"[{status}] {text}", flush=True)


def check(ok: bool, text: str) -> None:
    report("ok" if ok else "FAIL", text)


def _req(model: str, size: int, seeds: tuple[int, ...] = (1,), steps: int = 4) -> RenderRequest:
    return RenderRequest(
        prompt="a lighthouse at dusk",
        model=model,
        width=size,
        height=size,
        steps=steps,
        guidance=7.0,
        sampler="euler",
        seeds=seeds,
    )


def _dtypes(pipe: Any) -> dict[str, str]:
    return {
        name: str(module.dtype).removeprefix("torch.")
        for name, module in pipe.components.items()
        if isinstance(module, torch.nn.Module)
    }


def _sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


@contextmanager
def _oom_hook(module: torch.nn.Module) -> Iterator[None]:
    """Raise the GPU's out-of-memory from inside `module` (what a full card does, without one)."""

    def raise_oom(mod: Any, args: Any) -> None:
        raise torch.OutOfMemoryError("CUDA out of memory (forced by gpu_check)")

    handle = module.register_forward_pre_hook(raise_oom)
    try:
        yield
    finally:
        handle.remove()


@contextmanager
def _memory_cap(device: str) -> Iterator[None]:
    """Let the caching allocator hold only what it holds now plus 8 MB: the next big call runs out."""
    torch.cuda.empty_cache()
    total = torch.cuda.get_device_properties(device).total_memory
    torch.cuda.set_per_process_memory_fraction(
        min(1.0, (torch.cuda.memory_reserved(device) + 8 * 2**20) / total), device
    )
    try:
        yield
    finally:
        torch.cuda.set_per_process_memory_fraction(1.0, device)
        torch.cuda.empty_cache()


def check_dtypes(registry: ModelRegistry, engine: Engine) -> None:
    for model in ("tiny", "tiny-xl"):
        parent = _req(model, 64)
        image = engine.render([parent])[0][0]
        before = _dtypes(registry.pipeline(model))
        engine.render([upscale_of(parent, 0, source="s")], [image])
        after = _dtypes(registry.pipeline(model))
        img2img = registry.img2img(model)
        shared = all(
            [p.data_ptr() for p in module.parameters()]
            == [p.data_ptr() for p in getattr(img2img, name).parameters()]
            for name, module in registry.pipeline(model).components.items()
            if isinstance(module, torch.nn.Module)
        )
        want = str(registry.dtype).removeprefix("torch.")
        check(
            set(before.values()) == set(after.values()) == {want} and shared,
            f"dtypes {model}: before img2img {before}; after {after}; weights shared: {shared}",
        )


def check_tiling(registry: ModelRegistry, cuda: bool) -> None:
    # On CUDA the real ceiling and a real 2048² upscale; on CPU that takes minutes, so a small ceiling.
    size, ceiling = (2048, VAE_TILE_PIXELS) if cuda else (128, 96 * 96)
    engine = Engine(registry, vae_tile_pixels=ceiling)
    vae = registry.pipeline("tiny").vae
    seen: list[bool] = []
    handle = vae.decoder.register_forward_pre_hook(lambda module, args: seen.append(vae.use_tiling))
    try:
        parent = _req("tiny", size // 2)
        source = engine.render([parent])[0][0]
        seen.clear()
        start = time.perf_counter()
        big = engine.render([upscale_of(parent, 0, source="s")], [source])[0][0]
        took = time.perf_counter() - start
        tiles, tiled = len(seen), bool(seen) and all(seen)
        seen.clear()
        engine.render([_req("tiny", 64)])
        small_untiled = seen == [False]
    finally:
        handle.remove()
    pixels = np.asarray(big)
    check(
        tiled and small_untiled and big.size == (size, size) and pixels.std() > 0,
        f"VAE tiling: {size}² upscale decoded in {tiles} tiles, use_tiling on: {tiled} (ceiling "
        f"{ceiling} px), {took:.1f} s; a 64² render untiled: {small_untiled}",
    )
    if not cuda:
        report("needs CUDA", f"the real ceiling ({VAE_TILE_PIXELS} px) on a real 2048² upscale")


def check_oom(registry: ModelRegistry, device: str, cuda: bool) -> None:
    """An out-of-memory during an SDXL upscale (inside the VAE's fp32 upcast in fp16), then a normal
    render of the same model: it must work and the VAE must be back in the loaded dtype."""
    engine = Engine(registry)
    parent = _req("tiny-xl", 512 if cuda else 64)
    source = engine.render([parent])[0][0]
    up = upscale_of(parent, 0, source="s")
    vae = registry.pipeline("tiny-xl").vae
    label = str(registry.dtype).removeprefix("torch.")
    if cuda:
        how = "set_per_process_memory_fraction"
        cap = _memory_cap(device)
    else:
        how = "a hook raising OutOfMemoryError in the VAE encoder"
        cap = _oom_hook(vae.encoder)
    raised = ""
    with cap:
        try:
            engine.render([up], [source])
        except RenderError as exc:
            raised = str(exc)
    after_dtype = vae.dtype
    try:
        image = engine.render([up], [source])[0][0]
        normal = engine.render([_req("tiny-xl", 64, seeds=(2,))])[0][0]
        works = image.size == (up.width, up.height) and normal.size == (64, 64)
    except Exception as exc:
        works = False
        raised += f"; then: {exc}"
    check(
        bool(raised) and works and after_dtype == registry.dtype,
        f"forced OOM ({how}) during a tiny-xl upscale in {label}: "
        f"{'refused: ' + raised[:60] if raised else 'NO OOM HAPPENED'}; VAE dtype after: "
        f"{str(after_dtype).removeprefix('torch.')}; next upscale and render work: {works}",
    )


def check_batched_vs_solo(engine: Engine, device: str) -> None:
    size = 512 if device.startswith("cuda") else 128
    seeds = (10, 11, 12, 13)
    label = str(engine.registry.dtype).removeprefix("torch.")
    for model in ("tiny", "tiny-xl"):
        batched = engine.render([_req(model, size, seeds)])[0]
        solo = [engine.render([_req(model, size, (s,))])[0][0] for s in seeds]
        diffs = [
            np.abs(np.asarray(a, dtype=np.int16) - np.asarray(b, dtype=np.int16))
            for a, b in zip(batched, solo, strict=True)
        ]
        report(
            "info",
            f"batched vs solo, {model} {len(seeds)}x{size}² in {label}: max pixel difference "
            f"{max(int(d.max()) for d in diffs)}, mean {np.mean([d.mean() for d in diffs]):.3f} (of 255)",
        )


def check_side_thread(engine: Engine, device: str) -> None:
    """A render while a command's model calls (caption-sized text-encoder batches) run between its steps, as
    /describe beside a job (Engine.side_call): the pixels must not change; the render's time is shown alone
    and with the calls (their own time added, nothing more)."""
    import asyncio

    size = 512 if device.startswith("cuda") else 256
    request = _req("tiny", size, (21, 22), steps=8)
    pipe = engine.registry.pipeline("tiny")

    def side_work() -> float:
        started = time.perf_counter()
        ids = pipe.tokenizer(["a lighthouse at dusk"] * 16, padding="max_length", return_tensors="pt")
        with torch.no_grad():
            pipe.text_encoder(ids.input_ids.to(pipe.device))
        _sync(device)
        return time.perf_counter() - started

    def timed() -> tuple[list[Image.Image], float]:
        start = time.perf_counter()
        images = engine.render([request])[0]
        _sync(device)
        return images, time.perf_counter() - start

    async def run() -> tuple[list[Image.Image], float, list[Image.Image], float, list[float]]:
        await engine.call(timed)
        alone, alone_s = await engine.call(timed)
        rendering = asyncio.ensure_future(engine.call(timed))
        sides = [await engine.side_call(side_work) for _ in range(4)]
        beside, beside_s = await rendering
        return alone, alone_s, beside, beside_s, sides

    alone, alone_s, beside, beside_s, sides = asyncio.run(run())
    same = all(np.array_equal(np.asarray(a), np.asarray(b)) for a, b in zip(alone, beside, strict=True))
    check(same, f"a render with command calls between its steps: same pixels ({len(alone)}x{size}²)")
    report("info", f"render alone {alone_s:.3f} s, with 4 command calls between its steps {beside_s:.3f} s "
                   f"(the calls themselves: {sum(sides):.3f} s)")


def check_speed(registry: ModelRegistry, device: str) -> None:
    """Steps/s without previews, with them at the bot's rate (one a second, ATELIER_PREVIEW_INTERVAL) and
    with one every step (what the bot did before: a device sync per step). Interleaved, best of 5 each."""
    cuda = device.startswith("cuda")
    steps, size = (20, 512) if cuda else (12, 128)
    req = _req("tiny", size, (1, 2, 3, 4), steps=steps)
    runs = {"none": (1.0, False), "1/s": (1.0, True), "every step": (0.0, True)}
    best = dict.fromkeys(runs, float("inf"))
    made = dict.fromkeys(runs, 0)
    Engine(registry).render([req])
    for _ in range(5):
        for name, (interval, with_previews) in runs.items():
            engine = Engine(registry, preview_interval_s=interval)
            shown: list[Image.Image] = []  # held, so a new preview is never an old one's recycled id

            def progress(step: int, total: int, images: list[Image.Image],
                         shown: list[Image.Image] = shown) -> None:
                if not shown or images[0] is not shown[-1]:
                    shown.append(images[0])

            _sync(device)
            start = time.perf_counter()
            engine.render([req], on_progress=progress if with_previews else None)
            _sync(device)
            best[name] = min(best[name], time.perf_counter() - start)
            made[name] = len(shown)
    plain = best["none"]
    report(
        "info",
        f"4x{size}², {steps} steps: {steps / plain:.2f} steps/s without previews; {steps / best['1/s']:.2f} "
        f"with previews at most 1/s ({made['1/s']} made, {best['1/s'] / plain:.2f}x the time); "
        f"{steps / best['every step']:.2f} with a preview every step ({made['every step']} made, "
        f"{best['every step'] / plain:.2f}x)",
    )


class _RecompileCounter(logging.Handler):
    """Counts torch.compile's recompiles (its `recompiles` log artifact) and its give-ups at the recompile
    limit, after which dynamo runs the UNet uncompiled for new shapes without a word in the bot's log."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.recompiles = 0
        self.limit_hits = 0

    def emit(self, record: logging.LogRecord) -> None:
        text = record.getMessage()
        if text.startswith("Recompiling function"):
            self.recompiles += 1
        elif "recompile_limit" in text:
            self.limit_hits += 1

    @contextmanager
    def counting(self) -> Iterator[_RecompileCounter]:
        torch._logging.set_logs(recompiles=True)
        # Both kinds of record reach torch._dynamo (the recompiles artifact logger is a child of it).
        logger = logging.getLogger("torch._dynamo")
        logger.addHandler(self)
        try:
            yield self
        finally:
            logger.removeHandler(self)
            torch._logging.set_logs()


def check_compile(data_dir: Path, device: str, dtype: str, max_batch: int) -> None:
    """ATELIER_COMPILE: the warm-up plan's compiles and recompiles, then jobs at the planned sizes, which
    must recompile nothing (a member would wait minutes)."""
    cuda = device.startswith("cuda")
    registry = ModelRegistry([("tiny", "tiny")], data_dir, device=device, dtype=dtype, compile=True)
    # On a CPU every compile of even the tiny UNet takes minutes: one image per call keeps it bearable.
    engine = Engine(registry, max_images_per_call=None if cuda else 1)
    counter = _RecompileCounter()
    graphs = torch._dynamo.utils.counters["stats"]
    with counter.counting():
        before = graphs["unique_graphs"]
        start = time.perf_counter()
        engine.warm_up(max_batch=max_batch)
        took = time.perf_counter() - start
        warm = (counter.recompiles, counter.limit_hits, graphs["unique_graphs"] - before)
        jobs = [replace(_req("tiny", 64), width=w, height=h, steps=2, seeds=tuple(range(n)))
                for w, h in (size_for(aspect, "sd15") for aspect in ASPECTS)
                for n in ((1, 4) if cuda else (1,))]
        for job in jobs:
            engine.render([job])
        after = (counter.recompiles - warm[0], counter.limit_hits - warm[1])
    plan = len(warm_up_plan(registry.spec("tiny"), max_batch, engine.max_images_per_call))
    report("info", f"compile warm-up: {plan} sizes and batches in {took:.0f} s, {warm[2]} graphs, "
                   f"{warm[0]} recompiles, recompile limit hit {warm[1]} times")
    check(after == (0, 0), f"compile: {len(jobs)} jobs at planned sizes after the warm-up: {after[0]} "
                           f"recompiles, recompile limit hit {after[1]} times")


def check_compile_lora_hotswap(data_dir: Path, device: str, dtype: str) -> None:
    """ATELIER_COMPILE with LoRAs: the first LoRA adds its layers (one recompile at most), then switching to
    another LoRA (hotswapped into the same rank-padded slot) and back must recompile nothing."""
    from diffusers import StableDiffusionPipeline

    from generation.loras import write_random_lora
    from generation.tiny import ensure_tiny_model

    with tempfile.TemporaryDirectory() as tmp:
        lora_dir = Path(tmp)
        maker = StableDiffusionPipeline.from_pretrained(ensure_tiny_model(data_dir), local_files_only=True)
        write_random_lora(maker, lora_dir / "sd15" / "ink.safetensors", seed=1)
        write_random_lora(maker, lora_dir / "sd15" / "glow.safetensors", seed=2, rank=8)
        registry = ModelRegistry([("tiny", "tiny")], data_dir, device=device, dtype=dtype, compile=True,
                                 lora_dir=lora_dir, lora_hotswap_rank=64)
        engine = Engine(registry, max_images_per_call=1)
        job = replace(_req("tiny", 64), steps=2)
        counter = _RecompileCounter()
        with counter.counting():
            engine.render([replace(job, loras=(("ink", 1.0),))])
            first = counter.recompiles
            for name in ("glow", "ink", "glow"):
                engine.render([replace(job, loras=((name, 0.8),))])
        swaps = counter.recompiles - first
    report("info", f"compile + LoRA: first LoRA {first} recompiles")
    check(swaps == 0, f"compile + LoRA hotswap: 3 switches between LoRAs of rank 4 and 8: {swaps} recompiles")


def check_offload(data_dir: Path, device: str, dtype: str) -> None:
    """ATELIER_OFFLOAD on a real card: a render, an upscale (img2img from_pipe shares the offloaded modules)
    and a render again, with the peak device memory of each mode beside the plain one."""
    for mode in ("none", "model", "sequential"):
        registry = ModelRegistry([("tiny", "tiny")], data_dir, device=device, dtype=dtype, offload=mode)
        engine = Engine(registry)
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(device)
        try:
            parent = _req("tiny", 512)
            image = engine.render([parent])[0][0]
            big = engine.render([upscale_of(parent, 0, source="s")], [image])[0][0]
            again = engine.render([parent])[0][0]
            ok = big.size == (1024, 1024) and np.array_equal(np.asarray(image), np.asarray(again))
            detail = f"peak {torch.cuda.max_memory_allocated(device) / 2**20:.0f} MB"
        except Exception as exc:
            ok, detail = False, f"{type(exc).__name__}: {str(exc)[:80]}"
        check(ok, f"ATELIER_OFFLOAD={mode}: render, upscale, same render again: {detail}")
        del engine, registry


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--device", default="auto")
    parser.add_argument("--dtype", default=None, help="default: auto on CUDA, bfloat16 elsewhere")
    parser.add_argument("--data-dir", type=Path, default=None, help="where the tiny models go (temp dir)")
    parser.add_argument("--compile", action=argparse.BooleanOptionalAction, default=None,
                        help="check ATELIER_COMPILE's warm-up (default: on CUDA only)")
    parser.add_argument("--max-batch", type=int, default=4, help="ATELIER_MAX_BATCH for the warm-up plan")
    args = parser.parse_args()
    device = pick_device(args.device)
    cuda = device.startswith("cuda")
    dtype = args.dtype or ("auto" if cuda else "bfloat16")
    start = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        data_dir = args.data_dir or Path(tmp)
        registry = ModelRegistry(MODELS, data_dir, device=device, dtype=dtype)
        where = torch.cuda.get_device_name(device) if cuda else f"{os.cpu_count()} CPU cores"
        capability = f", compute capability {torch.cuda.get_device_capability(device)}" if cuda else ""
        print(f"{where}{capability}; torch {torch.__version__}; dtype {registry.dtype} ({dtype})")
        engine = Engine(registry)
        check_dtypes(registry, engine)
        check_tiling(registry, cuda)
        check_oom(registry, device, cuda)
        if registry.dtype != torch.float16:
            # fp16 is where SDXL upcasts its VAE to fp32 for decoding: check that path as well.
            check_oom(ModelRegistry(MODELS, data_dir, device=device, dtype="float16"), device, cuda)
        check_batched_vs_solo(engine, device)
        check_side_thread(engine, device)
        check_speed(registry, device)
        if args.compile if args.compile is not None else cuda:
            check_compile(data_dir, device, dtype, args.max_batch)
            check_compile_lora_hotswap(data_dir, device, dtype)
        else:
            report("skipped", "compile (minutes per shape on a CPU: pass --compile)")
        if cuda:
            check_offload(data_dir, device, dtype)
        else:
            report("needs CUDA", "a real out-of-memory (set_per_process_memory_fraction), not a raised one")
            report("needs CUDA", "batched vs solo on GPU kernels (CPU figures above)")
            report("needs CUDA", "steps/s on GPU kernels, where a preview's device sync stalls the queue")
            report("needs CUDA", "ATELIER_OFFLOAD=model|sequential (refused on a CPU at start)")
    print(f"{time.perf_counter() - start:.0f} s; {len(failures)} check(s) failed")
    return 1 if failures else 0


if __name__ == "__main__":
    raise SystemExit(main())
