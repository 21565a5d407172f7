from __future__ import annotations

import gc
import threading
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image

from generation.engine import StepGate
from generation.errors import RenderCancelled
from generation.request import Kind, RenderRequest
from generation.validate import upscale_of, variation_of


def _req(seeds: tuple[int, ...] = (1,), **kw: Any) -> RenderRequest:
    base: dict[str, Any] = {
        "prompt": "a lighthouse at dusk",
        "model": "tiny",
        "width": 64,
        "height": 64,
        "steps": 3,
        "guidance": 7.0,
        "sampler": "euler",
        "seeds": seeds,
    }
    base.update(kw)
    return RenderRequest(**base)


def _px(image: Image.Image) -> np.ndarray:
    return np.asarray(image.convert("RGB"), dtype=np.int16)


def _maxdiff(a: Image.Image, b: Image.Image) -> int:
    return int(np.abs(_px(a) - _px(b)).max())


def test_same_seed_same_pixels_other_seed_differs(tiny_engine: Any) -> None:
    a = tiny_engine.render([_req((11,))])[0][0]
    b = tiny_engine.render([_req((11,))])[0][0]
    c = tiny_engine.render([_req((12,))])[0][0]
    assert a.size == (64, 64)
    assert _maxdiff(a, b) == 0
    assert _maxdiff(a, c) > 10


def test_each_image_of_a_job_reproduces_alone(tiny_engine: Any) -> None:
    four = tiny_engine.render([_req((20, 21, 22, 23))])[0]
    assert len(four) == 4
    alone = tiny_engine.render([_req((22,))])[0][0]
    # CPU batched maths differs from solo only in float rounding (DESIGN §5: within 1e-5).
    assert _maxdiff(four[2], alone) <= 1
    assert _maxdiff(four[0], four[1]) > 10


def test_batched_requests_equal_solo_runs(tiny_engine: Any) -> None:
    requests = [
        _req((5,), prompt="a red house", negative="fog"),
        _req((6, 7), prompt="a blue boat"),
        _req((8,), prompt="a green tree", sampler="euler"),
    ]
    batched = tiny_engine.render(requests)
    assert [len(images) for images in batched] == [1, 2, 1]
    for request, images in zip(requests, batched, strict=True):
        solo = tiny_engine.render([request])[0]
        for got, want in zip(images, solo, strict=True):
            assert _maxdiff(got, want) <= 1


def test_mixed_batch_keys_are_refused(tiny_engine: Any) -> None:
    with pytest.raises(ValueError, match="batch_key"):
        tiny_engine.render([_req(), _req(steps=4)])


def test_progress_reports_every_step_with_one_small_preview_per_request(tiny_engine: Any) -> None:
    seen: list[tuple[int, int, list[tuple[int, int]]]] = []
    tiny_engine.render(
        [_req((1, 2), width=128, height=64, steps=4), _req((3,), width=128, height=64, steps=4)],
        on_progress=lambda step, total, previews: seen.append((step, total, [p.size for p in previews])),
    )
    assert [(s, t) for s, t, _ in seen] == [(1, 4), (2, 4), (3, 4), (4, 4)]
    assert all(sizes == [(16, 8), (16, 8)] for _, _, sizes in seen)


@pytest.mark.parametrize("sampler", ["dpmpp_2m_karras", "ddim", "euler_a", "unipc", "lcm"])
def test_previews_come_from_x0_for_other_samplers(tiny_engine: Any, sampler: str) -> None:
    previews: list[Image.Image] = []
    images = tiny_engine.render(
        [_req((4,), sampler=sampler)], on_progress=lambda s, t, p: previews.extend(p)
    )[0]
    assert images[0].size == (64, 64)
    assert previews and previews[-1].size == (8, 8)
    # A real projection of the latent, not the flat placeholder.
    assert np.asarray(previews[-1]).std() > 0


def test_the_step_gate_holds_a_render_until_opened_and_a_stop_still_ends_it(
        tiny_engine: Any, hold: Any, tmp_path: Path) -> None:
    with ThreadPoolExecutor(1) as pool:
        hold.close()
        steps: list[int] = []
        held = pool.submit(tiny_engine.render, [_req((5,))], on_progress=lambda s, t, p: steps.append(s))
        assert hold.holding.wait(60)
        assert steps == [1] and not held.done()  # waiting after its first step
        hold.open()
        [[image]] = held.result(60)
        assert _maxdiff(image, tiny_engine.render([_req((5,))])[0][0]) == 0  # the hold changes no pixel

        hold.close()
        stop = threading.Event()
        stopped = pool.submit(tiny_engine.render, [_req((5,))], should_stop=stop.is_set)
        assert hold.holding.wait(60)
        stop.set()
        with pytest.raises(RenderCancelled):
            stopped.result(60)
    # A bot process is held through a file (ATELIER_TEST_HOLD_FILE): closed while it exists.
    gate = StepGate(str(tmp_path / "hold"))
    assert gate.hold(lambda: True) is False
    (tmp_path / "hold").touch()
    assert gate.hold(lambda: True) is True


def test_cancel_stops_at_the_next_step(tiny_engine: Any) -> None:
    steps: list[int] = []
    with pytest.raises(RenderCancelled):
        tiny_engine.render(
            [_req((1,), steps=10)],
            on_progress=lambda s, t, p: steps.append(s),
            should_stop=lambda: len(steps) >= 2,
        )
    assert steps == [1, 2]
    with pytest.raises(RenderCancelled):
        tiny_engine.render([_req()], should_stop=lambda: True)
    # The engine is usable again right after.
    assert tiny_engine.render([_req()])[0][0].size == (64, 64)


def test_variation_keeps_size_depends_on_source_and_strength(tiny_engine: Any) -> None:
    parent = _req((30, 31), width=128, height=64, steps=4)
    originals = tiny_engine.render([parent])[0]
    subtle = variation_of(parent, 0, strong=False, source="a", seed=77)
    strong = variation_of(parent, 0, strong=True, source="a", seed=77)
    s0 = tiny_engine.render([subtle], [originals[0]])[0][0]
    s1 = tiny_engine.render([subtle], [originals[1]])[0][0]
    t0 = tiny_engine.render([strong], [originals[0]])[0][0]
    t1 = tiny_engine.render([strong], [originals[1]])[0][0]
    assert s0.size == t0.size == (128, 64)
    assert _maxdiff(s0, s1) > 10  # another source, another result
    # (The tiny model's random VAE cannot reconstruct a source, so compare dependence instead:)
    # a subtle variation depends more on its source than a strong one does.
    assert np.abs(_px(s0) - _px(s1)).mean() > np.abs(_px(t0) - _px(t1)).mean()
    again = tiny_engine.render([subtle], [originals[0]])[0][0]
    assert _maxdiff(s0, again) == 0


def test_upscale_doubles_and_follows_the_source(tiny_engine: Any) -> None:
    parent = _req((40, 41), steps=4)
    originals = tiny_engine.render([parent])[0]
    up = upscale_of(parent, 1, source="b")
    assert up.kind == Kind.UPSCALE and up.seeds == (41,)
    big = tiny_engine.render([up], [originals[1]])[0][0]
    other = tiny_engine.render([up], [originals[0]])[0][0]
    assert big.size == (128, 128)
    assert _maxdiff(big, other) > 10


def test_img2img_needs_its_sources(tiny_engine: Any) -> None:
    req = _req(kind=Kind.IMG2IMG, source="c", strength=0.5)
    with pytest.raises(ValueError, match="source image"):
        tiny_engine.render([req])
    image = Image.new("RGB", (100, 80), (200, 30, 30))
    out = tiny_engine.render([replace(req, width=64, height=48)], [image])[0][0]
    assert out.size == (64, 48)


def test_sdxl_tiny_path_with_and_without_negative(tiny_engine: Any) -> None:
    xl = [
        _req((1,), model="tiny-xl", width=128, height=128, steps=2),
        _req((2,), model="tiny-xl", width=128, height=128, steps=2, negative="blur"),
    ]
    previews: list[list[Image.Image]] = []
    batched = tiny_engine.render(xl, on_progress=lambda s, t, p: previews.append(p))
    assert [images[0].size for images in batched] == [(128, 128), (128, 128)]
    # Split into two calls (SDXL zeroes an absent negative), both reported as progress.
    assert previews[-1][0].size == (16, 16) and len(previews[-1]) == 2
    for request, images in zip(xl, batched, strict=True):
        assert _maxdiff(images[0], tiny_engine.render([request])[0][0]) <= 1
    up = upscale_of(xl[0], 0, "x")
    assert tiny_engine.render([up], [batched[0][0]])[0][0].size == (256, 256)


def test_split_calls_give_the_same_images_and_steady_progress(tiny_registry: Any, tiny_engine: Any) -> None:
    # The same chunking that out-of-memory recovery uses, forced by a per-call ceiling.
    from generation.engine import Engine

    split = Engine(tiny_registry, max_images_per_call=2)
    requests = [_req((50, 51, 52)), _req((53,), prompt="another")]
    seen: list[tuple[int, int]] = []
    images = split.render(requests, on_progress=lambda s, t, p: seen.append((s, t)))
    whole = tiny_engine.render(requests)
    for got, want in zip(images, whole, strict=True):
        assert [_maxdiff(a, b) <= 1 for a, b in zip(got, want, strict=True)] == [True] * len(want)
    assert seen == [(i, 6) for i in range(1, 7)]


def test_renders_leave_nothing_for_the_cycle_collector(tiny_engine: Any) -> None:
    """A render's images, previews and sources are freed when it returns, not at some later full GC
    pass: in a long-running bot that garbage grew resident memory by ~1 MB per job (bench/memory.py).
    Before the fix each render left ~22 objects in a cycle, its images among them."""
    parent = _req((5, 6))
    source = tiny_engine.render([parent])[0][0]
    up = upscale_of(parent, 0, source="s")
    gc.collect()
    gc.disable()
    try:
        for request, sources in ((parent, None), (up, [source]), (parent, None), (up, [source])):
            tiny_engine.render([request], sources, on_progress=lambda step, total, previews: None)
        unreachable = gc.collect()
    finally:
        gc.enable()
    assert unreachable < 10, unreachable


@pytest.mark.parametrize(
    ("error", "oom"),
    [
        (RuntimeError("CUDA out of memory. Tried to allocate 2.00 GiB"), True),
        (RuntimeError("cuDNN error: CUDNN_STATUS_ALLOC_FAILED"), True),
        (RuntimeError("CUDA error: CUBLAS_STATUS_ALLOC_FAILED when calling `cublasCreate(handle)`"), True),
        (RuntimeError("mat1 and mat2 shapes cannot be multiplied"), False),
        (ValueError("out of memory"), False),
    ],
)
def test_device_allocation_failures_count_as_out_of_memory(error: Exception, oom: bool) -> None:
    import torch

    from generation.models import is_oom

    assert is_oom(error) is oom
    assert is_oom(torch.OutOfMemoryError("CUDA out of memory"))


def test_cublas_alloc_failure_unloads_the_other_model_then_splits(
    tiny_data_dir: Any, tiny_engine: Any
) -> None:
    """cuBLAS / cuDNN report a failed workspace allocation as a plain RuntimeError; it is an out-of-memory
    all the same. The other resident model goes first, then the batch is split; images stay the same."""
    from generation.engine import Engine
    from generation.models import ModelRegistry

    registry = ModelRegistry([("tiny", "tiny"), ("other", "tiny-xl")], tiny_data_dir, device="cpu")
    registry.pipeline("other")
    unet = registry.pipeline("tiny").unet
    calls: list[tuple[int, bool]] = []  # (images in the UNet call, other model still loaded)

    def small_gpu(module: Any, args: Any) -> None:
        images = args[0].shape[0] // 2  # classifier-free guidance doubles the batch
        calls.append((images, registry.is_loaded("other")))
        if images > 2:
            raise RuntimeError("CUDA error: CUBLAS_STATUS_ALLOC_FAILED when calling `cublasCreate(handle)`")

    hook = unet.register_forward_pre_hook(small_gpu)
    try:
        four = Engine(registry).render([_req((60, 61, 62, 63))])[0]
    finally:
        hook.remove()
    # Four images with the other model loaded, again after unloading it, then halves of two.
    assert calls[:2] == [(4, True), (4, False)]
    assert set(calls[2:]) == {(2, False)}
    assert not registry.is_loaded("other") and registry.is_loaded("tiny")
    for seed, image in zip((60, 61, 62, 63), four, strict=True):
        assert _maxdiff(image, tiny_engine.render([_req((seed,))])[0][0]) <= 1


def test_an_out_of_memory_error_lets_go_of_the_failed_calls_memory(tiny_data_dir: Any) -> None:
    """The error a failed render raises carries the out-of-memory as its cause, and that traceback's
    frames held every activation of the failed call (here: one tensor made inside the UNet) for as long
    as the error lived (logged, retried after). They are cleared before the retry or the refusal."""
    import weakref

    import torch

    from generation.engine import Engine
    from generation.errors import RenderError
    from generation.models import ModelRegistry

    registry = ModelRegistry([("tiny", "tiny")], tiny_data_dir, device="cpu")
    refs: list[weakref.ref[torch.Tensor]] = []

    def full(module: Any, args: Any) -> None:
        activations = args[0] * 2  # what the failed call had allocated
        refs.append(weakref.ref(activations))
        raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")

    hook = registry.pipeline("tiny").unet.register_forward_pre_hook(full)
    try:
        with pytest.raises(RenderError, match="Out of GPU memory") as caught:
            Engine(registry).render([_req((70,))])
    finally:
        hook.remove()
    assert isinstance(caught.value.__cause__, torch.OutOfMemoryError)
    assert refs and [ref() for ref in refs] == [None] * len(refs)


async def test_a_command_call_runs_between_two_steps_of_a_render(tiny_engine: Any) -> None:
    """Engine.side_call (a caption, an upload check) during a render runs on the torch thread between two
    of its steps: the render makes no step while the call runs (a second thread would share its cores), the
    call waits one step, not the render, and the render's pixels are those of a render alone."""
    import asyncio
    import time

    steps: list[int] = []
    reached, go = threading.Event(), threading.Event()

    def on_progress(step: int, total: int, previews: Any) -> None:
        steps.append(step)
        if step == 1:
            reached.set()
            go.wait(30)  # until the command's call is waiting

    def command_call() -> tuple[int, int]:
        # Gives the render a whole second to move on, were it running beside this call.
        seen = len(steps)
        deadline = time.monotonic() + 1.0
        while time.monotonic() < deadline and len(steps) == seen:
            time.sleep(0.01)
        return seen, len(steps)

    request = _req((3,), steps=8)
    alone = tiny_engine.render([request])[0][0]
    rendering = asyncio.ensure_future(
        tiny_engine.call(tiny_engine.render, [request], on_progress=on_progress))
    assert await asyncio.to_thread(reached.wait, 30)
    called = asyncio.ensure_future(tiny_engine.side_call(command_call))
    await asyncio.sleep(0.05)  # the call is queued for the torch thread
    go.set()
    assert await called == (1, 1)  # ran after step 1, and step 2 waited for it
    beside = (await rendering)[0][0]
    assert steps == list(range(1, 9))
    assert _maxdiff(alone, beside) == 0
    # With no render running, a call runs at once on the thread's own queue; its failure is its own.
    assert await tiny_engine.side_call(lambda: "idle") == "idle"
    with pytest.raises(ZeroDivisionError):
        await tiny_engine.side_call(lambda: 1 / 0)
    assert tiny_engine.render([request])[0][0].size == (64, 64)
