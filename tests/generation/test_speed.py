"""Speed on a real card, as far as a CPU can show it: the preview throttle, the warm-up plan for compiled
models, fp16 weight variants and offload settings, on the real tiny models."""

from __future__ import annotations

import asyncio
import shutil
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest
import torch

from generation.engine import Engine, warm_up_plan
from generation.errors import ConfigError
from generation.events import JobProgress
from generation.models import ModelRegistry, make_spec
from generation.previews import PreviewThrottle
from generation.request import RenderRequest
from generation.scheduler import JobOwner, Scheduler
from generation.tiny import ensure_tiny_model
from generation.validate import ASPECTS, size_for
from storage import BlobStore, Database
from tests.generation.test_scheduler import request

WAIT_S = 120  # a hang guard only, never a timing assertion


# -- previews at the rate Discord shows them ----------------------------------------------------------


def test_the_throttle_lets_one_preview_through_per_interval_and_always_the_first_and_last() -> None:
    now = [100.0]
    throttle = PreviewThrottle(1.0, clock=lambda: now[0])
    seen = []
    for step in range(6):
        seen.append(throttle.due(step, 6))
        now[0] += 0.4
    # 100.0 first; 100.4 / 100.8 too soon; 101.2 a second on; 101.6 too soon; 102.0 the last step.
    assert seen == [True, False, False, True, False, True]


@pytest.fixture
async def db(tmp_path: Path) -> AsyncIterator[Database]:
    database = await Database.open(tmp_path / "atelier.db")
    yield database
    await database.close()


async def _progress_of_one_job(db: Database, root: Path, engine: Engine, steps: int) -> list[JobProgress]:
    scheduler = Scheduler(db, engine, BlobStore(root / "images"))
    await scheduler.start()
    try:
        await scheduler.pause()  # the job's stream exists before it runs
        job_id = await scheduler.submit(request(4, steps=steps, n=2), JobOwner(1, 10, 20))
        stream = scheduler.subscribe(job_id)
        await scheduler.resume()
        async with asyncio.timeout(WAIT_S):
            events = [event async for event in stream]
    finally:
        await scheduler.stop()
    return [e for e in events if isinstance(e, JobProgress)]


@pytest.mark.parametrize(("interval", "previews"), [(3600.0, 2), (0.0, 12)])
async def test_previews_are_made_at_most_once_per_interval_while_progress_goes_every_step(
    db: Database, tmp_path: Path, tiny_registry: Any, interval: float, previews: int
) -> None:
    engine = Engine(tiny_registry, preview_interval_s=interval)
    progress = await _progress_of_one_job(db, tmp_path, engine, steps=12)
    assert [p.step for p in progress] == list(range(1, 13))
    # A step that makes no preview reports the last one again (the same image): count the new ones.
    made = [p.preview for i, p in enumerate(progress) if i == 0 or p.preview is not progress[i - 1].preview]
    assert len(made) == previews
    # The first and the last step always have their own: the member sees the finished composition.
    assert progress[0].preview is made[0] and progress[-1].preview is made[-1]


# -- warm-up before any work, at the sizes jobs use ----------------------------------------------------


UnetInput = tuple[str, tuple[int, ...], int]  # model, latents' shape, text embeddings' length


@pytest.fixture
def unet_inputs(tiny_data_dir: Path) -> Iterator[tuple[ModelRegistry, list[UnetInput]]]:
    """A cold registry of two tiny models of which one stays loaded, and the shape of every latent batch
    its UNets see."""
    registry = ModelRegistry([("a", "tiny"), ("b", "tiny")], tiny_data_dir, device="cpu", max_loaded=1)
    seen: list[UnetInput] = []

    def record(module: Any, args: Any, kwargs: Any) -> None:
        # The latents' shape and the text embeddings' length (77 tokens per prompt chunk).
        seen.append(("a", tuple(args[0].shape), kwargs["encoder_hidden_states"].shape[1]))

    handle = registry.pipeline("a").unet.register_forward_pre_hook(record, with_kwargs=True)
    yield registry, seen
    handle.remove()


def _shapes(plan: list[RenderRequest]) -> set[tuple[str, int, int, int]]:
    return {(r.kind.value, r.width, r.height, r.count) for r in plan if "BREAK" not in r.prompt}


def test_the_warm_up_plan_covers_every_aspect_and_batch_size_a_call_can_hold(tiny_registry: Any) -> None:
    for model, family in (("tiny", "sd15"), ("tiny-xl", "sdxl")):
        spec = tiny_registry.spec(model)
        sizes = [size_for(aspect, family) for aspect in ASPECTS]
        upscales = {("upscale", 2 * w, 2 * h, 1) for w, h in sizes}

        def txt2img(images: int, sizes: list[tuple[int, int]] = sizes) -> set[tuple[str, int, int, int]]:
            return {("txt2img", w, h, n) for w, h in sizes for n in range(1, images + 1)}

        # ATELIER_MAX_BATCH=2 still meets a single job of four images (one job's images run together).
        assert _shapes(warm_up_plan(spec, 2)) == txt2img(4) | upscales
        assert _shapes(warm_up_plan(spec, 6)) == txt2img(6) | upscales
        assert _shapes(warm_up_plan(spec, 6, per_call=3)) == txt2img(3) | upscales
        assert all(r.steps == 1 and r.model == model for r in warm_up_plan(spec, 1))
    # A model's own native size (`?size=`) is the one its jobs use.
    sized = make_spec("s", "tiny?size=256")
    assert {(w, h) for _, w, h, n in _shapes(warm_up_plan(sized, 1)) if n == 1} >= {(256, 256), (312, 208)}


def test_warm_up_renders_the_plan_for_each_model_that_stays_loaded(unet_inputs: Any) -> None:
    registry, seen = unet_inputs
    engine = Engine(registry, max_images_per_call=1)  # one image per call keeps this CPU test short
    engine.warm_up(max_batch=1, every_size=True)

    # What the UNet saw: each aspect's latents (doubled by guidance) and each aspect's 2x upscale, with a
    # one-chunk prompt; then prompts of two and three chunks.
    sizes = [size_for(aspect, "sd15") for aspect in ASPECTS]
    want = {("a", (2, 4, h // 8, w // 8), 77) for w, h in sizes}
    want |= {("a", (2, 4, h // 4, w // 4), 77) for w, h in sizes}
    w, h = sizes[0]
    want |= {("a", (2, 4, h // 8, w // 8), 77 * chunks) for chunks in (2, 3)}
    assert set(seen) == want and len(seen) == len(want)
    # A second model would push the first out (max_loaded=1): it is not loaded, let alone warmed.
    assert not registry.is_loaded("b")

    # Warm-up happens once per loaded model: a second call renders nothing.
    seen.clear()
    engine.warm_up(max_batch=1, every_size=True)
    assert seen == []


def test_without_compile_the_warm_up_is_one_small_render(unet_inputs: Any) -> None:
    registry, seen = unet_inputs
    Engine(registry).warm_up(max_batch=4)
    assert seen == [("a", (2, 4, 8, 8), 77)]


@pytest.mark.parametrize("source", ["tiny", "tiny-sd3", "tiny-flux-schnell"])
def test_compile_wraps_the_denoiser_of_every_family(tiny_data_dir: Path, source: str) -> None:
    # torch.compile is lazy: loading costs nothing more, the first call at each shape compiles.
    registry = ModelRegistry([("m", source)], tiny_data_dir, device="cpu", compile=True)
    pipe = registry.pipeline("m")
    denoiser = pipe.unet if source == "tiny" else pipe.transformer
    assert isinstance(denoiser, torch._dynamo.eval_frame.OptimizedModule)
    # Room for the warm-up's graphs: at torch's default of 8 the tiny model's plan already ran out.
    assert torch._dynamo.config.recompile_limit >= 64


# -- fp16 weight variants ------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def variant_folders(tiny_data_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """The tiny model as two local folders: one with fp16 files beside the full ones (their UNet output
    bias marked, so which files were read shows in the weights), one with the full files only."""
    from diffusers import StableDiffusionPipeline

    root = tmp_path_factory.mktemp("variants")
    plain = root / "plain"
    shutil.copytree(ensure_tiny_model(tiny_data_dir), plain)
    both = root / "with-fp16"
    shutil.copytree(plain, both)
    pipe = StableDiffusionPipeline.from_pretrained(both, local_files_only=True, torch_dtype=torch.float16)
    with torch.no_grad():
        pipe.unet.conv_out.bias.fill_(0.5)
    saved = root / "saved-fp16"
    pipe.save_pretrained(saved, variant="fp16")
    # As on the hub: the fp16 weight files beside the full ones, one set of configs (saving in fp16 also
    # writes float16 into the configs; see the test below for a folder like that).
    for file in saved.glob("*/*.fp16.*"):
        shutil.copy(file, both / file.parent.name / file.name)
    assert list(both.glob("unet/*.fp16.safetensors")) and list(both.glob("text_encoder/*.fp16.*"))
    return {"plain": plain, "with-fp16": both, "saved-fp16": saved}


@pytest.mark.parametrize(("folder", "dtype", "bias"), [
    ("with-fp16", "float16", 0.5),  # half precision reads the fp16 files
    ("with-fp16", "bfloat16", 0.5),
    ("with-fp16", "float32", None),  # full precision keeps the full files
    ("plain", "float16", None),  # no fp16 files: the full ones, cast
])
def test_half_precision_loads_the_fp16_files_when_there_are_some(
    variant_folders: dict[str, Path], tmp_path: Path, folder: str, dtype: str, bias: float | None
) -> None:
    registry = ModelRegistry([("m", str(variant_folders[folder]))], tmp_path, device="cpu", dtype=dtype)
    pipe = registry.pipeline("m")
    assert pipe.unet.dtype == getattr(torch, dtype)
    loaded = pipe.unet.conv_out.bias.float()
    if bias is None:
        assert not torch.allclose(loaded, torch.full_like(loaded, 0.5))
    else:
        assert torch.allclose(loaded, torch.full_like(loaded, bias))
    image = Engine(registry).render([request(model="m")])[0][0]
    assert image.size == (64, 64)


def test_a_model_saved_in_fp16_still_loads_in_full_precision(
    variant_folders: dict[str, Path], tmp_path: Path
) -> None:
    """A folder saved from an fp16 pipeline says float16 in its text encoder's config.json, and
    transformers 5 loads in the config's dtype unless told otherwise: on a CPU (float32) the first render
    then failed with "mat1 and mat2 must have the same dtype"."""
    folder = tmp_path / "saved"
    shutil.copytree(variant_folders["saved-fp16"], folder)
    for file in folder.glob("*/*.fp16.*"):  # the full weight files under the same configs
        file.rename(file.with_name(file.name.replace(".fp16", "")))
    registry = ModelRegistry([("m", str(folder))], tmp_path, device="cpu", dtype="float32")
    pipe = registry.pipeline("m")
    assert {pipe.unet.dtype, pipe.text_encoder.dtype, pipe.vae.dtype} == {torch.float32}
    image = Engine(registry).render([request(model="m")])[0][0]
    assert image.size == (64, 64)


# -- offload needs a CUDA card ---------------------------------------------------------------------------


@pytest.mark.parametrize("mode", ["model", "sequential"])
def test_offload_on_a_cpu_is_refused_at_start_with_a_clear_message(tmp_path: Path, mode: str) -> None:
    with pytest.raises(ConfigError, match=f"ATELIER_OFFLOAD={mode} needs a CUDA GPU, but models run on cpu"):
        ModelRegistry([("tiny", "tiny")], tmp_path, device="cpu", offload=mode)
    with pytest.raises(ConfigError, match="ATELIER_OFFLOAD='disk' is not known"):
        ModelRegistry([("tiny", "tiny")], tmp_path, device="cpu", offload="disk")


def test_atelier_generate_with_offload_on_a_cpu_ends_with_one_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from bot.cli import main

    monkeypatch.chdir(tmp_path)  # no .env from the working directory
    for name, value in {"ATELIER_OFFLOAD": "model", "ATELIER_DEVICE": "cpu", "ATELIER_MODEL": "tiny",
                        "ATELIER_DATA_DIR": str(tmp_path / "data")}.items():
        monkeypatch.setenv(name, value)
    assert main(["generate", "a lighthouse", "--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ATELIER_OFFLOAD=model needs a CUDA GPU") and "\n" not in err
    assert not (tmp_path / "out").exists()
