from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from generation.engine import Engine
from generation.errors import InvalidRequest
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
    with pytest.raises(ValueError, match="bad default"):
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
