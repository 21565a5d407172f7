"""Dtypes, VAE tiling and the VAE upcast, on the real tiny models on CPU (bf16 / fp16 run there too)."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from PIL import Image

from generation.engine import Engine
from generation.errors import RenderError
from generation.models import ModelRegistry, fit_vae, pick_dtype
from generation.request import RenderRequest
from generation.tiny import ensure_tiny_model, tiny_model_dir
from generation.validate import upscale_of


def _req(model: str = "tiny", seeds: tuple[int, ...] = (3,), size: int = 64) -> RenderRequest:
    return RenderRequest(
        prompt="a lighthouse",
        model=model,
        width=size,
        height=size,
        steps=2,
        guidance=7.0,
        sampler="euler",
        seeds=seeds,
    )


def _px(image: Image.Image) -> np.ndarray:
    return np.asarray(image.convert("RGB"), dtype=np.int16)


def _corr(a: Image.Image, b: Image.Image) -> float:
    return float(np.corrcoef(_px(a).ravel(), _px(b).ravel())[0, 1])


@pytest.fixture(scope="module")
def registries(tiny_data_dir: Path) -> Iterator[dict[str, ModelRegistry]]:
    """One registry per reduced dtype, over the session's tiny model files."""
    models = [("tiny", "tiny"), ("tiny-xl", "tiny-xl")]
    yield {
        dtype: ModelRegistry(models, tiny_data_dir, device="cpu", dtype=dtype)
        for dtype in ("bfloat16", "float16")
    }


@pytest.mark.parametrize(
    ("device", "capability", "want"),
    [
        ("cuda", (7, 5), torch.float16),  # T4, RTX 20xx: bf16 "supported" but emulated
        ("cuda", (7, 0), torch.float16),  # V100
        ("cuda", (6, 1), torch.float16),  # GTX 10xx
        ("cuda", (8, 0), torch.bfloat16),  # A100
        ("cuda", (8, 6), torch.bfloat16),  # RTX 30xx
        ("cuda", (8, 9), torch.bfloat16),  # RTX 40xx, L4
        ("cuda", (9, 0), torch.bfloat16),  # H100
        ("cuda:1", (12, 0), torch.bfloat16),
        ("mps", None, torch.float16),
        ("cpu", None, torch.float32),
    ],
)
def test_auto_dtype_follows_compute_capability(device: str, capability: Any, want: torch.dtype) -> None:
    assert pick_dtype(device, "auto", capability) == want


def test_an_explicit_dtype_wins_and_a_wrong_one_is_refused() -> None:
    assert pick_dtype("cuda", "float16", (9, 0)) == torch.float16
    assert pick_dtype("cuda", "float32", (9, 0)) == torch.float32
    assert pick_dtype("cpu", "bfloat16") == torch.bfloat16
    with pytest.raises(ValueError, match="unknown dtype 'half'"):
        pick_dtype("cpu", "half")


@pytest.mark.parametrize("model", ["tiny", "tiny-xl"])
def test_upscale_keeps_the_loaded_dtype_and_shares_the_weights(
    registries: dict[str, ModelRegistry], model: str
) -> None:
    """diffusers' from_pipe casts the shared modules to fp32 unless told the dtype: the first U click
    used to double the memory and halve the speed of every later render of that model."""
    registry = registries["bfloat16"]
    engine = Engine(registry)
    parent = _req(model)
    image = engine.render([parent])[0][0]
    big = engine.render([upscale_of(parent, 0, source="s")], [image])[0][0]
    assert big.size == (128, 128)
    pipe, img2img = registry.pipeline(model), registry.img2img(model)
    modules = {name: m for name, m in pipe.components.items() if isinstance(m, torch.nn.Module)}
    assert {"unet", "vae", "text_encoder"} <= set(modules)
    for name, module in modules.items():
        params = list(module.parameters())
        assert {p.dtype for p in params} == {torch.bfloat16}, name
        shared = list(getattr(img2img, name).parameters())
        assert [p.data_ptr() for p in params] == [p.data_ptr() for p in shared], name
    # bf16 has fp32's range: the SDXL VAE needs no fp32 upcast (and no fp32 copy per encode).
    assert pipe.vae.config.force_upcast is False
    # And the next plain render still runs in bf16.
    assert engine.render([_req(model, seeds=(4,))])[0][0].size == (64, 64)


def test_large_decodes_are_tiled_and_batches_sliced(tiny_registry: Any, tiny_engine: Any) -> None:
    """`pipe.enable_vae_tiling()` is gone in diffusers 0.40+ and a hasattr guard skipped it silently:
    tiling never turned on. Check the flag while the decode runs, and the pixels it makes."""
    vae = tiny_registry.pipeline("tiny").vae
    seen: list[tuple[bool, bool, int]] = []
    hook = vae.decoder.register_forward_pre_hook(
        lambda module, args: seen.append((vae.use_tiling, vae.use_slicing, args[0].shape[0]))
    )
    # The default ceiling is for real 2048² upscales, too slow for the tiny model on CPU; lower it.
    tiled = Engine(tiny_registry, vae_tile_pixels=96 * 96)
    try:
        parent = _req()
        source = tiny_engine.render([parent])[0][0]
        up = upscale_of(parent, 0, source="s")
        seen.clear()
        big = tiled.render([up], [source])[0][0]
        # The 128² decode ran in 64² tiles (the tiny VAE's native size), all with tiling on.
        assert len(seen) > 1 and all(tiling for tiling, _, _ in seen)
        seen.clear()
        plain = tiny_engine.render([up], [source])[0][0]
        assert seen == [(False, False, 1)]
        # Tiles are normalised and blended on their own, so the decode follows the untiled one without
        # matching it (the tiny VAE's random GroupNorms make tiles differ far more than a real VAE's):
        # same size and colours, clearly correlated, no flat or black block (a lost tile), repeatable.
        assert big.size == plain.size == (128, 128)
        assert np.abs(_px(big).mean(axis=(0, 1)) - _px(plain).mean(axis=(0, 1))).max() < 10
        assert _corr(big, plain) > 0.4
        blocks = _px(big).reshape(4, 32, 4, 32, 3)
        assert blocks.std(axis=(1, 3, 4)).min() > 10
        assert np.array_equal(_px(big), _px(tiled.render([up], [source])[0][0]))
        # Four small images: not tiled, but decoded one at a time (same pixels as all at once).
        seen.clear()
        four = tiled.render([_req(seeds=(5, 6, 7, 8))])[0]
        assert seen == [(False, True, 1)] * 4
        whole = tiny_engine.render([_req(seeds=(5, 6, 7, 8))])[0]
        assert all(np.abs(_px(a) - _px(b)).max() <= 1 for a, b in zip(four, whole, strict=True))
    finally:
        hook.remove()
    # The shared VAE is switched back for small renders, and the real default tiles a 2048² upscale only.
    fit_vae(tiny_registry.pipeline("tiny"), 2048, 2048, 1)
    assert (vae.use_tiling, vae.use_slicing) == (True, True)
    fit_vae(tiny_registry.pipeline("tiny"), 1024, 1024, 1)
    assert (vae.use_tiling, vae.use_slicing) == (False, False)


@pytest.mark.parametrize(
    ("dtype", "upscale", "part"),
    [("float16", False, "decoder"), ("float16", True, "encoder"), ("bfloat16", True, "encoder")],
)
def test_out_of_memory_in_the_vae_upcast_leaves_the_model_usable(
    registries: dict[str, ModelRegistry], dtype: str, upscale: bool, part: str
) -> None:
    """SDXL upcasts its VAE to fp32 around the decode (fp16) and the img2img encode, and casts it back
    only on success: one out-of-memory there left the VAE in fp32 and every later render of the model
    failed on a dtype mismatch until restart. A hook on the real VAE raises the GPU's OOM."""
    registry = registries[dtype]
    want = getattr(torch, dtype)
    engine = Engine(registry)
    parent = _req("tiny-xl")
    source = engine.render([parent])[0][0]
    request, sources = (upscale_of(parent, 0, source="s"), [source]) if upscale else (parent, None)
    vae = registry.pipeline("tiny-xl").vae

    def out_of_memory(module: Any, args: Any) -> None:
        raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 4.00 GiB")

    hook = getattr(vae, part).register_forward_pre_hook(out_of_memory)
    try:
        with pytest.raises(RenderError, match="Out of GPU memory"):
            engine.render([request], sources)
    finally:
        hook.remove()
    assert vae.dtype == want
    # The same request now renders, and so do the model's other kinds of render.
    assert engine.render([request], sources)[0][0].size == (request.width, request.height)
    assert engine.render([_req("tiny-xl", seeds=(9,))])[0][0].size == (64, 64)
    assert engine.render([upscale_of(parent, 0, source="s")], [source])[0][0].size == (128, 128)
    assert vae.dtype == want


async def test_atelier_dtype_reaches_the_loaded_pipeline(
    tiny_data_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from bot.config import Settings
    from bot.services import Services

    # Reuse the session's tiny model files instead of writing them again.
    ensure_tiny_model(tiny_data_dir)
    (tmp_path / "models").mkdir()
    tiny_model_dir(tmp_path).symlink_to(tiny_model_dir(tiny_data_dir), target_is_directory=True)
    for key in [k for k in os.environ if k.startswith("ATELIER_")]:
        monkeypatch.delenv(key)
    monkeypatch.setenv("ATELIER_DTYPE", "bfloat16")
    monkeypatch.setenv("ATELIER_MODEL", "tiny")
    monkeypatch.setenv("ATELIER_DEVICE", "cpu")
    monkeypatch.setenv("ATELIER_DATA_DIR", str(tmp_path))
    services = await Services.open(Settings())
    try:
        pipe = services.registry.pipeline("tiny")
        assert {p.dtype for p in pipe.unet.parameters()} == {torch.bfloat16}
        assert pipe.vae.dtype == pipe.text_encoder.dtype == torch.bfloat16
        image = services.engine.render([_req()])[0][0]
        assert image.size == (64, 64) and _px(image).std() > 0
    finally:
        await services.close()
    monkeypatch.setenv("ATELIER_DTYPE", "half")
    with pytest.raises(ValueError, match="ATELIER_DTYPE"):
        Settings()
