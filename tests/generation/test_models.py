from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from generation.engine import Engine
from generation.errors import ConfigError, InvalidRequest
from generation.models import ModelRegistry, make_spec
from generation.request import RenderRequest
from generation.tiny import ensure_tiny_model, tiny_model_dir, write_single_file


def _req(model: str, seed: int = 3) -> RenderRequest:
    return RenderRequest(
        prompt="a lighthouse",
        model=model,
        width=64,
        height=64,
        steps=2,
        guidance=7.0,
        sampler="euler",
        seeds=(seed,),
    )


def test_tiny_model_is_written_once_as_a_real_diffusers_folder(
    tiny_registry: Any, tiny_data_dir: Path
) -> None:
    tiny_registry.pipeline("tiny")
    folder = tiny_model_dir(tiny_data_dir)
    index = json.loads((folder / "model_index.json").read_text())
    assert index["_class_name"] == "StableDiffusionPipeline"
    assert (folder / "unet" / "diffusion_pytorch_model.safetensors").exists()
    stamp = (folder / "unet" / "diffusion_pytorch_model.safetensors").stat().st_mtime_ns
    assert ensure_tiny_model(tiny_data_dir) == folder
    assert (folder / "unet" / "diffusion_pytorch_model.safetensors").stat().st_mtime_ns == stamp
    # The VAE has four blocks, so latents are 1/8 of the image like real SD.
    assert tiny_registry.pipeline("tiny").vae_scale_factor == 8
    # Torch SDPA attention throughout.
    processors = tiny_registry.pipeline("tiny").unet.attn_processors.values()
    assert {type(p).__name__ for p in processors} == {"AttnProcessor2_0"}
    xl = tiny_registry.pipeline("tiny-xl")
    assert type(xl).__name__ == "StableDiffusionXLPipeline" and xl.text_encoder_2 is not None


def test_specs_defaults_and_overrides() -> None:
    tiny = make_spec("t", "tiny")
    assert (tiny.family, tiny.default_steps, tiny.default_sampler) == ("sd15", 8, "euler")
    assert make_spec("x", "tiny-xl").family == "sdxl"
    turbo = make_spec("turbo", "stabilityai/sdxl-turbo")
    assert (turbo.family, turbo.default_steps, turbo.default_guidance) == ("sdxl", 4, 0.0)
    lcm = make_spec("l", "someone/lcm-dreamshaper?steps=5&cfg=1.2&sampler=LCM")
    assert (lcm.source, lcm.default_steps, lcm.default_guidance, lcm.default_sampler) == (
        "someone/lcm-dreamshaper",
        5,
        1.2,
        "lcm",
    )
    with pytest.raises(ValueError, match="unknown sampler 'warp'"):
        make_spec("bad", "x?sampler=warp")


def test_registry_names_default_and_unknown(tiny_registry: Any) -> None:
    assert tiny_registry.names() == ["tiny", "tiny-xl"]
    assert tiny_registry.spec(None).name == "tiny" == tiny_registry.default.name
    with pytest.raises(InvalidRequest, match="Unknown model `sd3`"):
        tiny_registry.spec("sd3")
    with pytest.raises(ValueError, match="twice"):
        ModelRegistry([("a", "tiny"), ("a", "tiny")], Path("unused"))


def test_least_recently_used_pipeline_is_swapped_out(tiny_data_dir: Path) -> None:
    registry = ModelRegistry(
        [("a", "tiny"), ("b", "tiny"), ("c", "tiny-xl")], tiny_data_dir, device="cpu", max_loaded=2
    )
    engine = Engine(registry)
    first = engine.render([_req("a")])[0][0]
    engine.render([_req("b")])
    engine.render([_req("a")])  # a is now the most recently used
    engine.render([_req("c")])
    assert [registry.is_loaded(n) for n in "abc"] == [True, False, True]
    # Reloaded from disk, same weights, same pixels.
    engine.render([_req("b")])
    assert [registry.is_loaded(n) for n in "abc"] == [False, True, True]
    again = engine.render([_req("b")])[0][0]
    assert np.array_equal(np.asarray(first), np.asarray(again))


@pytest.mark.parametrize(("xl", "family", "name"), [(False, "sd15", "tiny"), (True, "sdxl", "tiny-xl")])
def test_single_file_checkpoint_round_trip(tiny_registry: Any, tiny_data_dir: Path, tmp_path: Path,
                                          xl: bool, family: str, name: str) -> None:
    folder = ensure_tiny_model(tiny_data_dir, xl=xl)
    checkpoint = write_single_file(folder, tmp_path / f"tiny-{family}.safetensors")
    # Offline, a single file needs the family's config folder: here, beside it by name.
    config = tmp_path / f"tiny-{family}.config"
    config.symlink_to(folder, target_is_directory=True)
    registry = ModelRegistry([("single", str(checkpoint))], tmp_path / "data", device="cpu")
    spec = registry.spec("single")
    assert spec.family == family
    from_file = Engine(registry).render([_req("single")])[0][0]
    from_folder = Engine(tiny_registry).render([_req(name)])[0][0]
    assert np.array_equal(np.asarray(from_file), np.asarray(from_folder))
    # And the file really carries the weights: another seed gives other pixels.
    assert not np.array_equal(np.asarray(from_file),
                              np.asarray(Engine(registry).render([_req("single", seed=99)])[0][0]))


# -- per-model options (`source?key=value`) ---------------------------------------------------------


def _vae_folder(path: Path) -> Path:
    """A second tiny VAE (same architecture, other weights), as a diffusers folder."""
    import torch

    from generation.tiny import _vae

    torch.manual_seed(1234)
    _vae().save_pretrained(path)
    return path


def _vae_file(folder: Path, path: Path) -> Path:
    """The same VAE as a bare original-layout `.safetensors` file, as VAEs are shared (no config)."""
    from diffusers import AutoencoderKL
    from safetensors.torch import save_file

    from generation.tiny import _vae_to_ldm

    vae = AutoencoderKL.from_pretrained(folder, local_files_only=True)
    state = {k.removeprefix("first_stage_model."): v.contiguous()
             for k, v in _vae_to_ldm(vae.state_dict(), vae.config).items()}
    save_file(state, str(path))
    return path


@pytest.fixture(scope="module")
def vae_folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return _vae_folder(tmp_path_factory.mktemp("vae") / "second-vae")


@pytest.fixture(scope="module")
def options(tiny_data_dir: Path, vae_folder: Path) -> Engine:
    """One engine over the tiny model configured with each option."""
    vae_file = _vae_file(vae_folder, vae_folder.parent / "second-vae.safetensors")
    models = [
        ("plain", "tiny"),
        ("trailing", "tiny?spacing=trailing"),
        ("vpred", "tiny?prediction=v"),
        ("vpred-no-rescale", "tiny?prediction=v&cfg_rescale=0"),
        ("skip1", "tiny?clip_skip=1"),
        ("skip2", "tiny?clip_skip=2"),
        ("vae-folder", f"tiny?vae={vae_folder}"),
        ("vae-file", f"tiny?vae={vae_file}"),
    ]
    return Engine(ModelRegistry(models, tiny_data_dir, device="cpu", max_loaded=len(models)))


def _pixels(engine: Engine, model: str, sampler: str = "euler") -> np.ndarray:
    request = RenderRequest(prompt="a lighthouse", model=model, width=64, height=64, steps=3, guidance=7.0,
                            sampler=sampler, seeds=(5,))
    return np.asarray(engine.render([request])[0][0]).astype(float)


def test_spacing_trailing_reaches_the_scheduler_and_the_pixels(options: Engine) -> None:
    plain = _pixels(options, "plain")
    trailing = _pixels(options, "trailing")
    scheduler = options.registry.pipeline("trailing").scheduler  # the one the render used
    assert scheduler.config.timestep_spacing == "trailing"
    assert int(scheduler.timesteps[0]) == 999  # trailing starts at the last trained timestep
    assert options.registry.pipeline("plain").scheduler.config.timestep_spacing == "leading"
    assert not np.array_equal(plain, trailing)
    # An explicit spacing wins over a sampler's own (Exponential asks for linspace).
    _pixels(options, "trailing", "dpmpp_2m_sde_exponential")
    assert options.registry.pipeline("trailing").scheduler.config.timestep_spacing == "trailing"


def test_v_prediction_sets_zero_snr_and_guidance_rescale(options: Engine) -> None:
    vpred = _pixels(options, "vpred")
    config = options.registry.pipeline("vpred").scheduler.config
    assert (config.prediction_type, config.rescale_betas_zero_snr) == ("v_prediction", True)
    assert vpred.std() > 1.0
    assert not np.array_equal(vpred, _pixels(options, "plain"))
    # guidance_rescale (0.7 by default with v) reaches the pipeline call.
    assert not np.array_equal(vpred, _pixels(options, "vpred-no-rescale"))
    assert options.registry.spec("vpred").guidance_rescale == 0.7
    # SD1.x img2img takes no guidance_rescale: a variation of that model still renders.
    from PIL import Image

    from generation.request import Kind

    variation = RenderRequest(prompt="a lighthouse", model="vpred", width=64, height=64, steps=3,
                              guidance=7.0, sampler="euler", seeds=(6,), kind=Kind.VARIATION, source="x",
                              strength=0.6)
    [[image]] = options.render([variation], sources=[Image.fromarray(vpred.astype(np.uint8))])
    assert np.asarray(image).std() > 1.0


def test_clip_skip_counts_like_model_cards(options: Engine) -> None:
    plain = _pixels(options, "plain")
    # 1 = the last layer: what diffusers does anyway; 2 = the penultimate layer.
    assert np.array_equal(plain, _pixels(options, "skip1"))
    assert not np.array_equal(plain, _pixels(options, "skip2"))


@pytest.mark.parametrize("model", ["vae-folder", "vae-file"])
def test_separate_vae_changes_pixels(options: Engine, vae_folder: Path, model: str) -> None:
    import torch
    from diffusers import AutoencoderKL

    assert not np.array_equal(_pixels(options, "plain"), _pixels(options, model))
    vae = options.registry.pipeline(model).vae
    second = AutoencoderKL.from_pretrained(vae_folder, local_files_only=True)
    assert torch.equal(vae.decoder.conv_out.weight, second.decoder.conv_out.weight)


def test_separate_vae_loads_in_the_pipelines_dtype(tiny_data_dir: Path, vae_folder: Path) -> None:
    import torch

    registry = ModelRegistry([("v", f"tiny?vae={vae_folder}")], tiny_data_dir, device="cpu", dtype="bfloat16")
    pipe = registry.pipeline("v")
    assert pipe.vae.dtype == pipe.unet.dtype == torch.bfloat16
    assert np.asarray(Engine(registry).render([_req("v")])[0][0]).std() > 1.0


def test_size_sets_the_models_native_size(tiny_data_dir: Path) -> None:
    from generation.validate import RequestDraft, build_request

    registry = ModelRegistry([("small", "tiny?size=128"), ("plain", "tiny")], tiny_data_dir, device="cpu")
    square = build_request(RequestDraft(prompt="x", model="small"), registry)
    assert (square.width, square.height) == (128, 128)
    wide = build_request(RequestDraft(prompt="x", model="small", aspect="16:9"), registry)
    assert (wide.width, wide.height) == (168, 96)
    plain = build_request(RequestDraft(prompt="x", model="plain"), registry)
    assert (plain.width, plain.height) == (512, 512)


@pytest.mark.parametrize(
    ("source", "expected"),
    [
        ("ByteDance/SDXL-Lightning/sdxl_lightning_4step_unet", dict(spacing="trailing", default_steps=4,
                                                                    default_guidance=0.0)),
        ("models/Hyper-SDXL-8steps", dict(spacing="trailing", default_steps=8, default_sampler="ddim")),
        ("tianweiy/DMD2-sdxl", dict(spacing="trailing", default_steps=4, default_sampler="lcm")),
        ("stabilityai/sdxl-turbo", dict(spacing="trailing", size=512, default_sampler="euler_a")),
        ("models/dreamshaperXL_turbo.safetensors", dict(spacing="trailing", size=None)),
        ("Laxhar/noobai-XL-Vpred-1.0", dict(prediction="v_prediction", zero_snr=True, guidance_rescale=0.7)),
        ("models/768-v-ema.ckpt", dict(prediction="v_prediction", size=768)),
        ("models/hyperrealism_v3", dict(spacing=None, default_steps=25)),
        # Explicit options beat the name.
        ("x/sdxl_lightning_4step?spacing=leading&steps=6&cfg=1.5",
         dict(spacing="leading", default_steps=6, default_guidance=1.5)),
        ("x/noobai-vpred?zsnr=0&cfg_rescale=0.5&sampler=heun",
         dict(zero_snr=False, guidance_rescale=0.5, default_sampler="heun")),
    ],
)
def test_well_known_names_get_fitting_defaults(source: str, expected: dict[str, Any]) -> None:
    spec = make_spec("m", source)
    assert {k: getattr(spec, k) for k in expected} == expected


@pytest.mark.parametrize(
    ("source", "named"),
    [
        ("tiny?spacin=trailing", "unknown option 'spacin'"),
        ("tiny?spacing=sideways", "spacing='sideways'"),
        ("tiny?prediction=x0", "prediction='x0'"),
        ("tiny?clip_skip=two", "clip_skip='two'"),
        ("tiny?clip_skip=0", "clip_skip='0'"),
        ("tiny?size=100", "size=100"),
        ("tiny?steps=", "option 'steps' needs a value"),
        ("tiny?cfg=nan", "cfg='nan'"),
        ("tiny?steps=4&steps=5", "option 'steps' is given twice"),
        ("tiny?vae=/nowhere/vae.safetensors", "vae '/nowhere/vae.safetensors' not found"),
        ("tiny?prediction=v&sampler=heun", "sampler 'Heun' cannot run the zero-terminal-SNR schedule"),
    ],
)
def test_bad_option_is_a_config_error_naming_it(source: str, named: str) -> None:
    with pytest.raises(ConfigError) as caught:
        make_spec("m", source)
    message = caught.value.user_message
    assert named in message and message.startswith("model 'm': ") and "\n" not in message


def test_atelier_run_exits_2_on_a_bad_model_option(tmp_path: Path) -> None:
    import os
    import subprocess
    import sys

    env = {**os.environ, "DISCORD_TOKEN": "not-a-token", "ATELIER_DATA_DIR": str(tmp_path / "data"),
           "ATELIER_MODEL": "tiny?clip_skp=2", "HF_HUB_OFFLINE": "1"}
    done = subprocess.run([sys.executable, "-m", "bot.cli", "run"], env=env, cwd=tmp_path,
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 2
    assert done.stderr.strip().splitlines()[-1].startswith("error: model 'tiny?clip_skp=2': bad option")
    assert "unknown option 'clip_skp'" in done.stderr and "Traceback" not in done.stderr


def test_zero_snr_models_refuse_samplers_that_cannot_run_it(tiny_data_dir: Path) -> None:
    from generation.validate import RequestDraft, build_request

    registry = ModelRegistry([("v", "tiny?prediction=v")], tiny_data_dir, device="cpu")
    with pytest.raises(InvalidRequest, match="Heun does not work with model `v`"):
        build_request(RequestDraft(prompt="x", sampler="Heun"), registry)
    assert build_request(RequestDraft(prompt="x", sampler="DPM++ 2M Karras"), registry).sampler == (
        "dpmpp_2m_karras")
