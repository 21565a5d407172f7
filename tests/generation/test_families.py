"""Every model family (SD1.x, SD2.x, SDXL, SD3, Flux.1 schnell and dev) through the real engine: loaded
from its diffusers folder (family read from model_index.json), txt2img, img2img, previews, batching."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image

from generation.errors import InvalidRequest, RenderError
from generation.families import FAMILIES
from generation.models import ModelRegistry, make_spec
from generation.request import Kind, RenderRequest
from generation.tiny import write_single_file
from generation.validate import Limits, RequestDraft, build_request, size_for
from tests.conftest import FAMILY_MODELS
from tests.generation.test_engine import _maxdiff


def _req(model: str, seeds: tuple[int, ...] = (1,), **kw: Any) -> RenderRequest:
    base: dict[str, Any] = {
        "prompt": "a lighthouse at dusk",
        "model": model,
        "width": 64,
        "height": 96,
        "steps": 3,
        "guidance": FAMILIES[model].default_guidance,
        "sampler": "euler",
        "seeds": seeds,
    }
    base.update(kw)
    return RenderRequest(**base)


@pytest.mark.parametrize(
    ("family", "pipeline"),
    [
        ("sd15", "StableDiffusionPipeline"),
        ("sd2", "StableDiffusionPipeline"),
        ("sdxl", "StableDiffusionXLPipeline"),
        ("sd3", "StableDiffusion3Pipeline"),
        ("flux-schnell", "FluxPipeline"),
        ("flux-dev", "FluxPipeline"),
    ],
)
def test_each_family_is_detected_from_its_folder_and_loads_its_pipeline(
        family_engine: Any, family_dirs: dict[str, Path], family: str, pipeline: str) -> None:
    registry = family_engine.registry
    assert json.loads((family_dirs[family] / "model_index.json").read_text())["_class_name"] == pipeline
    assert registry.spec(family).family == family
    assert type(registry.pipeline(family)).__name__ == pipeline
    fam = FAMILIES[family]
    assert registry.pipeline(family).vae.config.latent_channels == fam.latent_channels
    # img2img shares the loaded modules (no second copy of the weights).
    img2img = registry.img2img(family)
    assert type(img2img).__name__ == pipeline.replace("Pipeline", "Img2ImgPipeline")
    assert img2img.vae is registry.pipeline(family).vae


def test_family_defaults_follow_the_table() -> None:
    # schnell: 4 steps and no guidance; dev: distilled guidance 3.5; flow families sample with euler.
    assert make_spec("s", "black-forest-labs/FLUX.1-schnell").family == "flux-schnell"
    schnell = make_spec("s", "black-forest-labs/FLUX.1-schnell")
    assert (schnell.default_steps, schnell.default_guidance, schnell.default_sampler) == (4, 0.0, "euler")
    dev = make_spec("d", "black-forest-labs/FLUX.1-dev")
    assert (dev.family, dev.default_steps, dev.default_guidance) == ("flux-dev", 28, 3.5)
    assert make_spec("3", "stabilityai/stable-diffusion-3.5-medium").family == "sd3"
    assert make_spec("2", "stabilityai/stable-diffusion-2-1").family == "sd2"
    with pytest.raises(ValueError, match="flow matching"):
        make_spec("bad", "black-forest-labs/FLUX.1-dev?sampler=dpmpp_2m_karras")


@pytest.mark.parametrize("family", FAMILY_MODELS)
def test_txt2img_img2img_and_previews(family_engine: Any, family: str) -> None:
    previews: list[list[Image.Image]] = []
    a = family_engine.render([_req(family, (11,))], on_progress=lambda s, t, p: previews.append(p))[0][0]
    assert a.size == (64, 96)
    assert _maxdiff(a, family_engine.render([_req(family, (11,))])[0][0]) == 0
    assert _maxdiff(a, family_engine.render([_req(family, (12,))])[0][0]) > 10
    # One preview per step at 1/8 of the output: for Flux, unpacked from its 2x2-packed tokens.
    assert len(previews) == 3 and previews[-1][0].size == (8, 12)
    assert np.asarray(previews[-1][0]).std() > 0  # a projection of the latent, not the placeholder

    variation = _req(family, (5,), kind=Kind.VARIATION, strength=0.6, source="blob")
    varied = family_engine.render([variation], [a])[0][0]
    assert varied.size == a.size  # SD3 / Flux img2img would otherwise render at their native 1024²
    assert _maxdiff(varied, a) > 0


@pytest.mark.parametrize("family", FAMILY_MODELS)
def test_batched_requests_equal_solo_runs(family_engine: Any, family: str) -> None:
    negative = "fog" if FAMILIES[family].negative else ""
    requests = [
        _req(family, (5,), prompt="a red house", negative=negative),
        _req(family, (6, 7), prompt="a blue boat"),
    ]
    batched = family_engine.render(requests)
    assert [len(images) for images in batched] == [1, 2]
    for request, images in zip(requests, batched, strict=True):
        for got, want in zip(images, family_engine.render([request])[0], strict=True):
            # CPU batched maths differs from solo only in float rounding (DESIGN §5).
            assert _maxdiff(got, want) <= 1


def test_flux_dev_guidance_is_embedded_and_schnell_ignores_it(family_engine: Any) -> None:
    dev = [family_engine.render([_req("flux-dev", (3,), guidance=g)])[0][0] for g in (1.0, 6.0)]
    assert _maxdiff(dev[0], dev[1]) > 0
    schnell = [family_engine.render([_req("flux-schnell", (3,), guidance=g)])[0][0] for g in (1.0, 6.0)]
    assert _maxdiff(schnell[0], schnell[1]) == 0


@pytest.mark.parametrize("family", ["sd3", "flux-schnell", "flux-dev"])
def test_flow_families_refuse_sd_samplers_and_sizes_are_multiples_of_16(family_engine: Any,
                                                                        family: str) -> None:
    registry = family_engine.registry
    with pytest.raises(InvalidRequest, match="flow matching: sampler `dpmpp_2m_karras` does not apply"):
        build_request(RequestDraft("a boat", model=family, sampler="DPM++ 2M Karras"), registry)
    request = build_request(RequestDraft("a boat", model=family, aspect="16:9"), registry)
    assert request.sampler == "euler"
    assert request.width % 16 == 0 and request.height % 16 == 0
    assert (request.width, request.height) == size_for("16:9", family)
    upscaled = build_request(
        RequestDraft("", model=family, kind=Kind.UPSCALE, source="blob"), registry, source_size=(333, 500)
    )
    assert upscaled.width % 16 == 0 and upscaled.height % 16 == 0


def test_flux_takes_no_negative_prompt_and_schnell_no_guidance(family_engine: Any) -> None:
    registry = family_engine.registry
    for family in ("flux-schnell", "flux-dev"):
        with pytest.raises(InvalidRequest, match="take no negative prompt"):
            build_request(RequestDraft("a boat --no fog", model=family), registry)
    assert build_request(RequestDraft("a boat --cfg 5", model="flux-schnell"), registry).guidance == 0.0
    assert build_request(RequestDraft("a boat --cfg 5", model="flux-dev"), registry).guidance == 5.0
    # SD3 keeps classifier-free guidance and its negative prompt.
    sd3 = build_request(RequestDraft("a boat --no fog --cfg 5", model="sd3"), registry)
    assert (sd3.negative, sd3.guidance) == ("fog", 5.0)


def test_pixel_limits_come_from_the_family_table(family_engine: Any) -> None:
    registry = family_engine.registry
    limits = Limits()
    assert limits.max_pixels["sd2"] == 1536 * 1536 and limits.max_pixels["flux-dev"] == 2048 * 2048
    sd2 = build_request(RequestDraft("a boat", model="sd2"), registry)
    assert (sd2.width, sd2.height) == (768, 768)


def test_sd2_single_file_round_trip(family_engine: Any, family_dirs: dict[str, Path], tmp_path: Path) -> None:
    folder = family_dirs["sd2"]
    checkpoint = write_single_file(folder, tmp_path / "tiny-sd2.safetensors")
    config = tmp_path / "tiny-sd2.config"
    config.symlink_to(folder, target_is_directory=True)
    registry = ModelRegistry([("single", str(checkpoint))], tmp_path / "data", device="cpu")
    assert registry.spec("single").family == "sd2"  # told apart from SD1 by its OpenCLIP keys
    from generation.engine import Engine

    from_file = Engine(registry).render([replace(_req("sd2"), model="single")])[0][0]
    from_folder = family_engine.render([_req("sd2")])[0][0]
    assert _maxdiff(from_file, from_folder) == 0


def test_single_file_flux_is_refused_clearly(tmp_path: Path) -> None:
    import torch
    from safetensors.torch import save_file

    path = tmp_path / "flux1-dev.safetensors"
    save_file({"double_blocks.0.img_attn.qkv.weight": torch.zeros(1), "guidance_in.in_layer.weight":
               torch.zeros(1)}, str(path))
    registry = ModelRegistry([("flux", str(path))], tmp_path / "data", device="cpu")
    assert registry.spec("flux").family == "flux-dev"
    with pytest.raises(RenderError, match=r"single-file Flux\.1 dev checkpoints are not supported"):
        registry.pipeline("flux")


def _xl(model: str, seeds: tuple[int, ...] = (1,), **kw: Any) -> RenderRequest:
    return replace(_req("sdxl", seeds, **kw), model=model, steps=4)


def test_the_refiner_finishes_txt2img_renders_from_the_base_latents(refiner_engine: Any) -> None:
    seen: list[tuple[int, int]] = []
    previews: list[Image.Image] = []

    def progress(step: int, total: int, shown: list[Image.Image]) -> None:
        seen.append((step, total))
        previews.append(shown[0])

    refined = refiner_engine.render([_xl("xl", (7,))], on_progress=progress)[0][0]
    assert refined.size == (64, 96)
    # The refiner's steps count on from the base's: one bar over the model's steps.
    assert seen == [(1, 4), (2, 4), (3, 4), (4, 4)]
    assert all(p.size == (8, 12) for p in previews)
    plain = refiner_engine.render([_xl("plain", (7,))])[0][0]
    assert _maxdiff(refined, plain) > 10  # the second half ran through the refiner's own weights
    assert _maxdiff(refined, refiner_engine.render([_xl("xl", (7,))])[0][0]) == 0
    # Batched with others, each image equals its solo render.
    batched = refiner_engine.render([_xl("xl", (7, 8)), _xl("xl", (9,), negative="fog")])
    assert _maxdiff(batched[0][0], refined) <= 1
    assert _maxdiff(batched[1][0], refiner_engine.render([_xl("xl", (9,), negative="fog")])[0][0]) <= 1


def test_variations_are_not_refined_and_a_refiner_alone_cannot_txt2img(refiner_engine: Any) -> None:
    source = refiner_engine.render([_xl("plain", (3,))])[0][0]
    varied = [
        refiner_engine.render([_xl(m, (4,), kind=Kind.VARIATION, strength=0.5, source="b")], [source])[0][0]
        for m in ("xl", "plain")
    ]
    assert _maxdiff(varied[0], varied[1]) == 0
    with pytest.raises(RenderError, match="is a refiner"):
        refiner_engine.render([_xl("ref")])


@pytest.mark.parametrize(
    ("sources", "message"),
    [
        ([("xl", "tiny-xl?refiner=nope")], "is not another configured model"),
        ([("sd", "tiny?refiner=xl"), ("xl", "tiny-xl")], "SDXL models only"),
        ([("xl", "tiny-xl?refiner=r&refiner_at=1.5"), ("r", "tiny-xl")], "refiner_at must be between"),
    ],
)
def test_a_bad_refiner_setting_is_a_clear_error(tmp_path: Path, sources: list[tuple[str, str]],
                                                message: str) -> None:
    with pytest.raises(ValueError, match=message):
        ModelRegistry(sources, tmp_path, device="cpu")


def test_t5_reads_256_tokens_on_schnell_and_512_on_dev(family_engine: Any) -> None:
    # The tiny T5 tokenizer makes about one token per character; both tails lie past CLIP's 77 tokens,
    # so only T5 can see them, and only up to the family's max_sequence_length.
    head = "a lighthouse " + "x" * 350
    tails = (head + " red sky", head + " green sea")
    for family, differs in (("flux-schnell", False), ("flux-dev", True), ("sd3", False)):
        a, b = (family_engine.render([_req(family, (2,), prompt=t)])[0][0] for t in tails)
        assert (_maxdiff(a, b) > 0) == differs, family


def test_built_in_tiny_sources_of_each_family(family_dirs: dict[str, Path], tiny_data_dir: Path) -> None:
    from generation.engine import Engine

    registry = ModelRegistry([("s", "tiny-flux-schnell"), ("2", "tiny-sd2")], tiny_data_dir, device="cpu")
    schnell = registry.spec("s")
    assert (schnell.family, schnell.is_tiny, schnell.default_steps, schnell.default_guidance) == (
        "flux-schnell", True, 4, 0.0)
    assert registry.spec("2").family == "sd2"
    image = Engine(registry).render([replace(_req("flux-schnell"), model="s")])[0][0]
    assert image.size == (64, 96)


def test_flux_previews_unpack_latents_as_the_pipeline_packs_them() -> None:
    import torch
    from diffusers import FluxPipeline

    from generation.previews import latent_to_preview, unpack_latent

    flux = FAMILIES["flux-dev"]
    latent = torch.randn(1, 16, 12, 8)  # a 64x96 image
    packed = FluxPipeline._pack_latents(latent, 1, 16, 12, 8)[0]
    assert torch.equal(unpack_latent(packed, flux, 64, 96), latent[0])
    preview = latent_to_preview(packed, flux, 64, 96)
    # Projected with Flux's own 16x3 factors and bias (ComfyUI's), pixel for pixel.
    weight = torch.tensor(flux.rgb_factors)
    rgb = torch.einsum("chw,cr->hwr", latent[0], weight) + torch.tensor(flux.rgb_bias)
    expected = ((rgb.clamp(-1, 1) + 1) * 127.5).to(torch.uint8).numpy()
    assert np.array_equal(np.asarray(preview), expected)
