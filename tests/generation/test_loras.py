"""LoRA library, prompt syntax and the engine's adapter switching, with tiny LoRAs made by peft on the tiny
model (saved in diffusers' LoRA format, the files a member would download)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from generation.engine import Engine
from generation.errors import InvalidRequest
from generation.loras import LoraLibrary, a1111_tags, detect_family, write_random_lora
from generation.models import ModelRegistry
from generation.request import Kind, RenderRequest
from generation.validate import RequestDraft, build_request, parse_flags, upscale_of
from tests.generation.test_engine import _maxdiff, _req


@pytest.fixture(scope="module")
def lora_dir(tmp_path_factory: pytest.TempPathFactory, tiny_data_dir: Path) -> Path:
    from diffusers import StableDiffusionPipeline

    from generation.tiny import ensure_tiny_model

    root = tmp_path_factory.mktemp("loras")
    pipe = StableDiffusionPipeline.from_pretrained(ensure_tiny_model(tiny_data_dir), local_files_only=True)
    write_random_lora(pipe, root / "sd15" / "ink.safetensors", seed=1)
    write_random_lora(pipe, root / "sd15" / "glow.safetensors", seed=2)
    # The same kind of file for another family: the folder says SDXL.
    write_random_lora(pipe, root / "sdxl" / "xlonly.safetensors", seed=3)
    # A two-vector textual-inversion embedding in A1111's layout, triggered by the word "shiny".
    import torch
    from safetensors.torch import save_file

    width = pipe.text_encoder.config.hidden_size
    save_file({"emb_params": torch.randn(2, width, generator=torch.Generator().manual_seed(4))},
              str(root / "sd15" / "shiny.safetensors"))
    return root


@pytest.fixture(scope="module")
def engine(tiny_data_dir: Path, lora_dir: Path) -> Iterator[Engine]:
    registry = ModelRegistry([("tiny", "tiny")], tiny_data_dir, device="cpu", lora_dir=lora_dir)
    yield Engine(registry)


# -- prompt syntax -------------------------------------------------------------------------------------


def test_lora_flags_and_a1111_tags_are_read_and_stripped() -> None:
    prompt, flags = parse_flags("a cat <lora:ink:0.8> on a mat --lora glow:0.5 --ar 3:2 --lora rough")
    assert prompt == "a cat on a mat"
    assert flags["loras"] == [("ink", 0.8), ("glow", 0.5), ("rough", 1.0)]
    assert flags["aspect"] == "3:2"
    assert parse_flags("<lora:ink>")[1]["loras"] == [("ink", 1.0)]
    for bad in ("a --lora ink:lots", "a --lora ink:9", "a --lora :0.5", "a <lora:ink:x>"):
        with pytest.raises(InvalidRequest):
            parse_flags(bad)


def test_build_request_resolves_names_family_and_close_matches(engine: Engine) -> None:
    registry = engine.registry
    request = build_request(RequestDraft(prompt="a cat --lora ink:0.7 <lora:glow:0.3>"), registry)
    assert request.loras == (("glow", 0.3), ("ink", 0.7))
    assert request.prompt == "a cat"
    # A job's LoRAs survive the trip through storage's JSON.
    assert RenderRequest.from_json(request.to_json()) == request
    with pytest.raises(InvalidRequest, match="Did you mean `ink`"):
        build_request(RequestDraft(prompt="a cat --lora inkk"), registry)
    with pytest.raises(InvalidRequest, match="is for SDXL models; this model is SD 1"):
        build_request(RequestDraft(prompt="a cat --lora xlonly"), registry)
    assert build_request(RequestDraft(prompt="a cat"), registry).loras == ()


def test_family_from_keys(tmp_path: Path) -> None:
    """Without a family folder the keys tell: a second text encoder is SDXL; otherwise the width of the
    cross-attention key projection's input (768 CLIP-L, 1024 OpenCLIP-H, 2048 SDXL)."""
    import torch
    from safetensors.torch import save_file

    key = "unet.down_blocks.0.attentions.0.transformer_blocks.0.attn2.to_k.lora_A.weight"
    for width, family in ((768, "sd15"), (1024, "sd2"), (2048, "sdxl")):
        path = tmp_path / f"w{width}.safetensors"
        save_file({key: torch.zeros(2, width)}, str(path))
        assert detect_family(path) == family
    te2 = tmp_path / "te2.safetensors"
    te2_key = "text_encoder_2.text_model.encoder.layers.0.self_attn.q_proj.lora_A.weight"
    save_file({te2_key: torch.zeros(2, 8)}, str(te2))
    assert detect_family(te2) == "sdxl"
    assert {n: f.family for n, f in LoraLibrary(tmp_path).files().items()} == {
        "w768": "sd15", "w1024": "sd2", "w2048": "sdxl", "te2": "sdxl"}


def test_a1111_tags() -> None:
    assert a1111_tags((("ink", 0.8), ("glow", 1.0))) == "<lora:ink:0.8> <lora:glow:1>"


# -- rendering ------------------------------------------------------------------------------------------


def test_weight_zero_is_the_plain_image_and_weight_one_differs(engine: Engine) -> None:
    plain = engine.render([_req()])[0][0]
    zero = engine.render([_req(loras=(("ink", 0.0),))])[0][0]
    one = engine.render([_req(loras=(("ink", 1.0),))])[0][0]
    assert _maxdiff(plain, zero) == 0
    assert _maxdiff(plain, one) > 10
    # Plain jobs after a LoRA job render as before it.
    assert _maxdiff(plain, engine.render([_req()])[0][0]) == 0


def test_two_loras_weighted(engine: Engine) -> None:
    ink = engine.render([_req(loras=(("ink", 1.0),))])[0][0]
    both = engine.render([_req(loras=(("ink", 1.0), ("glow", 1.0)))])[0][0]
    glow_off = engine.render([_req(loras=(("ink", 1.0), ("glow", 0.0)))])[0][0]
    half = engine.render([_req(loras=(("ink", 1.0), ("glow", 0.5)))])[0][0]
    assert _maxdiff(ink, glow_off) == 0
    assert _maxdiff(ink, both) > 10
    assert _maxdiff(half, both) > 0 and _maxdiff(half, ink) > 0


def test_adapters_load_once_and_are_switched(engine: Engine) -> None:
    engine.render([_req(loras=(("ink", 1.0),))])
    engine.render([_req()])
    engine.render([_req(loras=(("ink", 0.5), ("glow", 1.0)))])
    pipe = engine.registry.pipeline("tiny")
    # One adapter per file, whatever the number of jobs that used it.
    assert sorted(pipe.get_list_adapters()["unet"]) == sorted(engine.registry._entry("tiny").adapters)
    assert len(pipe.get_list_adapters()["unet"]) == 2


def test_a_lora_job_and_a_plain_job_split_and_match_their_solo_renders(engine: Engine) -> None:
    from generation.scheduler import batch_key_text

    with_lora, plain = _req((7,), loras=(("ink", 1.0),)), _req((8,))
    assert batch_key_text(with_lora) != batch_key_text(plain)
    assert _req(loras=(("ink", 1.0),)).batch_key == with_lora.batch_key
    with pytest.raises(ValueError, match="share a batch_key"):
        engine.render([with_lora, plain])
    solo_lora = engine.render([with_lora])[0][0]
    solo_plain = engine.render([plain])[0][0]
    # Two LoRA jobs share a call and each matches its solo render.
    both = engine.render([with_lora, _req((9,), loras=(("ink", 1.0),))])
    assert _maxdiff(both[0][0], solo_lora) <= 1
    assert _maxdiff(engine.render([plain])[0][0], solo_plain) == 0


def test_upscale_of_a_lora_job_uses_the_lora(engine: Engine) -> None:
    job = _req(loras=(("ink", 1.0),))
    image = engine.render([job])[0][0]
    up = upscale_of(job, 0, source="x")
    assert up.loras == job.loras and up.kind == Kind.UPSCALE
    with_lora = engine.render([up], [image])[0][0]
    without = engine.render([upscale_of(_req(), 0, source="x")], [image])[0][0]
    assert _maxdiff(with_lora, without) > 0


def test_embedding_by_trigger_word(engine: Engine, tiny_engine: Any) -> None:
    """The library's embedding changes prompts with its word and nothing else; the weighted prompt encoder
    (generation/prompts.py) reads both of its vectors."""
    from generation.loras import expand_embeddings
    from generation.prompts import chunk

    with pytest.raises(InvalidRequest, match="Unknown LoRA"):
        build_request(RequestDraft(prompt="a cat --lora shiny"), engine.registry)
    # tiny_engine has no library: the same weights without the embedding.
    plain_word = tiny_engine.render([_req(prompt="a shiny cat")])[0][0]
    with_word = engine.render([_req(prompt="a shiny cat")])[0][0]
    assert _maxdiff(plain_word, with_word) > 10
    assert _maxdiff(tiny_engine.render([_req(prompt="a red cat")])[0][0],
                    engine.render([_req(prompt="a red cat")])[0][0]) == 0
    pipe = engine.registry.pipeline("tiny")
    ids = {pipe.tokenizer.convert_tokens_to_ids(t) for t in ("shiny", "shiny_1")}
    assert all(i >= pipe.tokenizer.vocab_size for i in ids)
    assert ids <= set(chunk(pipe.tokenizer, expand_embeddings(pipe, "a shiny cat")).chunks[0][0])


def test_sdxl_embedding_goes_into_both_text_encoders(tmp_path: Path, tiny_data_dir: Path) -> None:
    import torch
    from safetensors.torch import save_file

    registry = ModelRegistry([("xl", "tiny-xl")], tiny_data_dir, device="cpu", lora_dir=tmp_path)
    xl_engine = Engine(registry)
    pipe = registry.pipeline("xl")
    before = xl_engine.render([_req(model="xl", prompt="a glossy cat")])[0][0]
    torch.manual_seed(6)
    (tmp_path / "sdxl").mkdir()
    save_file({"clip_l": torch.randn(1, pipe.text_encoder.config.hidden_size),
               "clip_g": torch.randn(1, pipe.text_encoder_2.config.hidden_size)},
              str(tmp_path / "sdxl" / "glossy.safetensors"))
    assert registry.loras.get("glossy").kind == "embedding"  # type: ignore[union-attr]
    after = xl_engine.render([_req(model="xl", prompt="a glossy cat")])[0][0]
    assert _maxdiff(before, after) > 10
    for tokenizer in (pipe.tokenizer, pipe.tokenizer_2):
        assert tokenizer.convert_tokens_to_ids("glossy") >= tokenizer.vocab_size


def test_hotswapped_loras_render_as_loaded_ones(tiny_data_dir: Path, lora_dir: Path, engine: Engine) -> None:
    # The path ATELIER_COMPILE takes, without compiling: LoRAs swapped into fixed, rank-padded slots.
    swapping = Engine(ModelRegistry([("tiny", "tiny")], tiny_data_dir, device="cpu", lora_dir=lora_dir,
                                    lora_hotswap_rank=8))
    jobs = [_req(loras=(("ink", 1.0),)), _req(loras=(("glow", 0.7),)), _req(),
            _req(loras=(("glow", 1.0), ("ink", 0.5))), _req(loras=(("ink", 1.0),))]
    for job in jobs:
        assert _maxdiff(swapping.render([job])[0][0], engine.render([job])[0][0]) == 0
    # glow went into the slot ink had (a swap, not a second adapter); the two-LoRA job used two slots.
    entry = swapping.registry._entry("tiny")
    assert set(entry.pipe.unet.peft_config) == {"slot0", "slot1"}
    ranks = {m.lora_A["slot0"].weight.shape[0] for m in entry.pipe.unet.modules() if hasattr(m, "lora_A")
             and "slot0" in m.lora_A}
    assert ranks == {8}  # the rank-4 files padded to the slot's rank
