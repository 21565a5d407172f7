"""Midjourney's prompt language: multi-prompts `cat:: dog::2` with weights (negative too), as weighted text
embeddings on the real tiny SD1.x and SDXL pipelines, and the parsing as properties (any string is a
request or a clear error, never a crash)."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image

from generation.errors import InvalidRequest
from generation.families import family_of
from generation.knobs import CHAOS_SCALE, chaos_jitter, circular_padding, freeu_factors
from generation.prompts import MAX_PARTS, MAX_WEIGHT, call_arguments, chunk_count, split_multi
from generation.request import RenderRequest
from generation.validate import (
    MAX_EXPANSION,
    RequestDraft,
    build_request,
    expand_prompt,
    upscale_of,
    variation_of,
)

# -- parsing ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("a red fox", [("a red fox", 1.0)]),
        ("cat:: dog::2", [("cat", 1.0), ("dog", 2.0)]),
        ("cat::dog", [("cat", 1.0), ("dog", 1.0)]),
        ("hot dog::1.5 ketchup:: -0.5", [("hot dog", 1.5), ("ketchup", -0.5)]),
        ("cat::2 dog::-.5 bird", [("cat", 2.0), ("dog", -0.5), ("bird", 1.0)]),
        ("a::1", [("a", 1.0)]),
        ("(red:1.5) fox:: sky::2", [("(red:1.5) fox", 1.0), ("sky", 2.0)]),  # A1111 weights inside a part
        ("cat::99999 dog", [("cat", MAX_WEIGHT), ("dog", 1.0)]),
        (":: ::3", []),
    ],
)
def test_multi_prompt_parts(text: str, expected: list[tuple[str, float]]) -> None:
    assert split_multi(text) == expected


def _draft(prompt: str) -> RequestDraft:
    return RequestDraft(prompt=prompt, model="tiny", seed=1)


@pytest.mark.parametrize(
    ("prompt", "message"),
    [
        ("dog::-0.5", "must add up to more than zero"),
        ("cat::1 dog::-1", "must add up to more than zero"),
        (":: ::2", "needs words between"),
        (" ".join(f"w{i}::" for i in range(MAX_PARTS + 1)), f"at most {MAX_PARTS} parts"),
    ],
)
def test_a_bad_multi_prompt_gets_a_clear_message(tiny_registry: Any, prompt: str, message: str) -> None:
    with pytest.raises(InvalidRequest, match=message):
        build_request(_draft(prompt), tiny_registry)


def test_a_multi_prompt_keeps_its_flags(tiny_registry: Any) -> None:
    request = build_request(_draft("cat:: dog::2 --ar 16:9 --no blur"), tiny_registry)
    assert (request.prompt, request.negative) == ("cat:: dog::2", "blur")
    assert request.width > request.height


prompt_text = st.lists(
    st.one_of(st.sampled_from([":", "::", " ", "-", ".", "0", "2", "(", ")", "[", "]", "--ar 1:1", "--no "]),
              st.characters(blacklist_categories=("Cs",))),
    max_size=40,
).map("".join)


@settings(max_examples=300, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(prompt_text)
def test_any_prompt_is_a_request_or_a_clear_error(tiny_registry: Any, text: str) -> None:
    try:
        request = build_request(_draft(text), tiny_registry)
    except InvalidRequest as error:
        assert error.user_message and len(error.user_message) < 300
        return
    parts = split_multi(request.prompt)
    assert parts and sum(w for _, w in parts) > 0 and len(parts) <= MAX_PARTS
    assert all(abs(w) <= MAX_WEIGHT for _, w in parts)


# -- embeddings ------------------------------------------------------------------------------


@pytest.mark.parametrize("model", ["tiny", "tiny-xl"])
def test_parts_mix_by_normalized_weights(tiny_registry: Any, model: str) -> None:
    pipe = tiny_registry.pipeline(model)
    mixed = call_arguments(pipe, ["cat::1 dog::3", "bird"], ["", "blur"])
    cat, dog = (call_arguments(pipe, [p], [""]) for p in ("cat", "dog"))
    keys = ["prompt_embeds"] + (["pooled_prompt_embeds"] if model == "tiny-xl" else [])
    for key in keys:
        want = 0.25 * cat[key][0] + 0.75 * dog[key][0]
        assert torch.allclose(mixed[key][0], want, atol=1e-5), key
        # The plain row beside it is encoded as alone (a batched forward: float rounding only).
        assert torch.allclose(mixed[key][1], call_arguments(pipe, ["bird"], ["blur"])[key][0], atol=1e-5), key
    negative = call_arguments(pipe, ["cat::1 dog::-0.5"], [""])["prompt_embeds"][0]
    assert torch.allclose(negative, 2 * cat["prompt_embeds"][0] - dog["prompt_embeds"][0], atol=1e-5)


def test_the_longest_part_decides_the_chunk_count(tiny_registry: Any) -> None:
    pipe = tiny_registry.pipeline("tiny")
    long = "a lighthouse on a cliff at dusk, " * 3  # 96 tokens: two chunks
    assert chunk_count(pipe, f"cat:: {long}::2", "") == 2 == chunk_count(pipe, long, "")
    # Each part is chunked on its own: two parts of 64 tokens take one chunk each, not two together.
    part = "a lighthouse on a cliff at dusk, " * 2
    assert chunk_count(pipe, f"{part}:: {part}::2", "") == 1


# -- pixels ------------------------------------------------------------------------------------


def _req(prompt: str, seeds: tuple[int, ...] = (1,), **kw: Any) -> RenderRequest:
    base: dict[str, Any] = {"prompt": prompt, "model": "tiny", "width": 64, "height": 64, "steps": 3,
                            "guidance": 7.0, "sampler": "euler", "seeds": seeds}
    base.update(kw)
    return RenderRequest(**base)


def _xl(prompt: str, seeds: tuple[int, ...] = (1,)) -> RenderRequest:
    return _req(prompt, seeds, model="tiny-xl", width=128, height=128, steps=2)


def _maxdiff(a: Image.Image, b: Image.Image) -> int:
    return int(np.abs(np.asarray(a, dtype=np.int16) - np.asarray(b, dtype=np.int16)).max())


def _one(engine: Any, request: RenderRequest) -> Image.Image:
    return engine.render([request])[0][0]


@pytest.mark.parametrize("make", [_req, _xl])
def test_multi_prompt_pixels(tiny_engine: Any, make: Any) -> None:
    plain = _one(tiny_engine, make("cat dog"))
    # One part is the prompt itself, whatever its weight.
    assert _maxdiff(_one(tiny_engine, make("cat dog::1")), plain) == 0
    assert _maxdiff(_one(tiny_engine, make("cat dog::3")), plain) == 0
    # Two parts are two concepts mixed, not one phrase; their weights and signs matter.
    even = _one(tiny_engine, make("cat::1 dog::1"))
    assert _maxdiff(even, plain) > 0
    assert _maxdiff(_one(tiny_engine, make("cat::1 dog::3")), even) > 0
    assert _maxdiff(_one(tiny_engine, make("cat::1 dog::-0.5")), even) > 0
    # Normalized: only the ratio of the weights counts.
    assert _maxdiff(_one(tiny_engine, make("cat::2 dog::2")), even) <= 1


@pytest.mark.parametrize("make", [_req, _xl])
def test_a_batch_with_multi_prompts_equals_solo_renders(tiny_engine: Any, make: Any) -> None:
    requests = [make("cat::1 dog::2", (3,)), make("a boat", (4, 5)), make("sea:: sky::-0.3 sun", (6,))]
    batched = tiny_engine.render(requests)
    for request, images in zip(requests, batched, strict=True):
        for got, want in zip(images, tiny_engine.render([request])[0], strict=True):
            assert _maxdiff(got, want) <= 1  # CPU batched maths: float rounding only (DESIGN §5)


# -- flags: --q, --stop, --stylize, --tile ------------------------------------------------------


def test_style_flags_become_request_fields(tiny_registry: Any) -> None:
    plain = build_request(_draft("a fox --steps 10"), tiny_registry)
    styled = build_request(
        _draft("a fox --steps 10 --q 2 --stop 40 --stylize 250 --tile on a hill --chaos 30"), tiny_registry)
    assert (styled.prompt, styled.steps, styled.stop, styled.stylize, styled.tile, styled.chaos) == (
        "a fox on a hill", 20, 40, 250, True, 30)
    assert (plain.steps, plain.stop, plain.stylize, plain.tile) == (10, 100, None, False)
    assert build_request(_draft("a fox --steps 10 --q .5 --s 0"), tiny_registry).steps == 5
    assert RenderRequest.from_json(styled.to_json()) == styled
    # Variations keep the style; an upscale keeps tile and stylize but finishes the picture it was given.
    assert variation_of(styled, 0, strong=False, source="k", seed=1).stop == 40
    upscaled = upscale_of(styled, 0, "k")
    assert (upscaled.tile, upscaled.stylize, upscaled.stop, upscaled.chaos) == (True, 250, 100, 0)
    # Each changes the call: never batched with a request without it.
    for change in ({"tile": True}, {"stylize": 100}, {"stop": 50}):
        assert replace(plain, **change).batch_key != plain.batch_key


@pytest.mark.parametrize(
    ("prompt", "needle"),
    [
        ("cat --weird 5", "Unknown flag `--weird`"),
        ("cat --chaos 101", "`--chaos` takes 0 to 100"),
        ("cat --q 3", "`--q` takes .5, 1 or 2"),
        ("cat --q fast", "`--q` needs a number"),
        ("cat --steps 50 --q 2", "makes 100 steps"),
        ("cat --stop 5", "`--stop` takes a share of the steps from 10 to 100"),
        ("cat --stylize 1001", "`--stylize` takes 0 to 1000"),
        ("cat --tile --tile", "`--tile` is given twice"),
    ],
)
def test_bad_style_flags_name_the_flag(tiny_registry: Any, prompt: str, needle: str) -> None:
    with pytest.raises(InvalidRequest) as info:
        build_request(_draft(prompt), tiny_registry)
    assert needle in info.value.user_message


def test_the_stylize_curve() -> None:
    assert freeu_factors(0, "sd15") == (1.0, 1.0, 1.0, 1.0)  # FreeU off: the UNet unchanged
    assert freeu_factors(1000, "sd15") == pytest.approx((1.5, 1.6, 0.9, 0.2))  # FreeU's published values
    assert freeu_factors(1000, "sdxl") == pytest.approx((1.3, 1.4, 0.9, 0.2))
    assert freeu_factors(500, "sd15") == pytest.approx((1.25, 1.3, 0.95, 0.6))


def _styled(prompt: str = "a fox", **kw: Any) -> RenderRequest:
    return _req(prompt, **{"seeds": (7,), "steps": 4, **kw})


def test_stylize_changes_the_pixels_and_is_undone_after(tiny_engine: Any) -> None:
    plain = _one(tiny_engine, _styled())
    assert _maxdiff(_one(tiny_engine, _styled(stylize=1000)), plain) > 0
    assert _maxdiff(_one(tiny_engine, _styled()), plain) == 0  # the shared UNet is restored
    assert _maxdiff(_one(tiny_engine, _styled(stylize=0)), plain) <= 1  # identity factors (FFT rounding)


def _shift_render(pipe: Any, latents: Any) -> np.ndarray:
    image = pipe("a fox", num_inference_steps=2, guidance_scale=7.0, width=128, height=128, latents=latents,
                 output_type="np").images[0]
    return np.asarray(image * 255, dtype=np.float32)


def test_tile_makes_the_output_shift_with_the_latent(tiny_registry: Any) -> None:
    pipe = tiny_registry.pipeline("tiny")
    latents = torch.randn((1, 4, 16, 16), generator=torch.Generator().manual_seed(3))
    shifted = torch.roll(latents, 8, dims=-1)  # the tiny UNet's stride: 3 downsamplers, 8 latent pixels
    with torch.inference_mode():
        with circular_padding(pipe):
            a, b = _shift_render(pipe, latents), _shift_render(pipe, shifted)
        plain_a, plain_b = _shift_render(pipe, latents), _shift_render(pipe, shifted)
    # Seamless: everything wraps around, so the picture moves with its noise (64 pixels) and its left
    # and right edges continue each other.
    assert np.abs(np.roll(a, 64, axis=1) - b).max() <= 2
    # Without it the borders pad with zeros and the shifted noise makes another picture.
    assert np.abs(np.roll(plain_a, 64, axis=1) - plain_b).max() > 10


def test_tile_through_the_engine_and_undone_after(tiny_engine: Any) -> None:
    plain = _one(tiny_engine, _styled())
    assert _maxdiff(_one(tiny_engine, _styled(tile=True)), plain) > 0
    assert _maxdiff(_one(tiny_engine, _styled()), plain) == 0  # the shared convolutions are restored


def test_stop_decodes_the_estimate_of_the_step_it_stops_at(tiny_engine: Any) -> None:
    full = _one(tiny_engine, _styled(steps=8))
    assert _maxdiff(_one(tiny_engine, _styled(steps=8, stop=100)), full) == 0
    early = _one(tiny_engine, _styled(steps=8, stop=50))
    assert _maxdiff(early, full) > 0
    # The same call by hand: record the latents before and after the 4th of 8 Euler steps, work out the
    # step's denoised estimate from them (x0 = x - sigma * (x_next - x) / (sigma_next - sigma)), decode.
    registry = tiny_engine.registry
    pipe = registry.pipeline("tiny")
    scheduler = pipe.scheduler
    seen: list[Any] = []

    def record(p: Any, step_index: int, timestep: Any, kwargs: dict[str, Any]) -> dict[str, Any]:
        seen.append(kwargs["latents"].clone())
        return kwargs

    try:
        pipe.scheduler = family_of("sd15").make_scheduler("euler", registry.scheduler_config("tiny"),
                                                          registry.spec("tiny").scheduler_options, seeds=[7])
        with torch.inference_mode():
            pipe(**call_arguments(pipe, ["a fox"], [""]), num_inference_steps=8, guidance_scale=7.0,
                 width=64, height=64, generator=[torch.Generator().manual_seed(7)],
                 callback_on_step_end=record, output_type="latent")
            sigmas = pipe.scheduler.sigmas
            x, x_next = seen[2], seen[3]
            x0 = x - sigmas[3] * (x_next - x) / (sigmas[4] - sigmas[3])
            decode = [pipe.image_processor.postprocess(
                pipe.vae.decode(latents / pipe.vae.config.scaling_factor).sample, output_type="pil")[0]
                for latents in (x0, x_next)]
    finally:
        pipe.scheduler = scheduler
    assert _maxdiff(early, decode[0]) <= 1
    assert _maxdiff(early, decode[1]) > 2  # not the noisy latent


def test_chaos_spreads_the_images_of_a_job_and_rerolls_the_same(tiny_engine: Any) -> None:
    seeds = (11, 12, 13, 14)
    calm = tiny_engine.render([_styled(seeds=seeds)])[0]
    zero = tiny_engine.render([_styled(seeds=seeds, chaos=0)])[0]
    assert all(_maxdiff(a, b) == 0 for a, b in zip(zero, calm, strict=True))
    wild = tiny_engine.render([_styled(seeds=seeds, chaos=100)])[0]
    assert all(_maxdiff(a, b) > 0 for a, b in zip(wild, calm, strict=True))
    # Drawn from each image's seed: image 3 alone (a reroll of seed 13) and in a batch beside a calm job.
    alone = _one(tiny_engine, _styled(seeds=(13,), chaos=100))
    beside = tiny_engine.render([_styled(seeds=(13,), chaos=100), _styled(seeds=(5,))])[0][0]
    assert _maxdiff(alone, wild[2]) <= 1 and _maxdiff(beside, wild[2]) <= 1


def test_chaos_spreads_the_prompt_embeddings_linearly(tiny_registry: Any) -> None:
    pipe = tiny_registry.pipeline("tiny")
    args = call_arguments(pipe, ["a fox"] * 4, [""] * 4)
    spread = []
    for chaos in (0, 50, 100):
        jittered = chaos_jitter(args, [(seed, chaos) for seed in range(4)])["prompt_embeds"]
        spread.append(float((jittered - args["prompt_embeds"]).std()))
    assert spread[0] == 0 and spread[2] == pytest.approx(2 * spread[1], rel=0.01)
    assert spread[2] == pytest.approx(CHAOS_SCALE * float(args["prompt_embeds"][0].std()), rel=0.05)


# -- permutations and --repeat --------------------------------------------------------------------


@pytest.mark.parametrize(
    ("prompt", "expected"),
    [
        ("a bird", ["a bird"]),
        ("{red, blue} bird", ["red bird", "blue bird"]),
        ("{red, blue} bird --ar {1:1, 16:9}",
              ["red bird --ar 1:1", "red bird --ar 16:9", "blue bird --ar 1:1", "blue bird --ar 16:9"]),
        ("a {big {red, blue}, small} bird", ["a big red bird", "a big blue bird", "a small bird"]),
        ("a bird --repeat 3", ["a bird"] * 3),
        ("{cat, dog} --r 2 --ar 3:2", ["cat --ar 3:2", "cat --ar 3:2", "dog --ar 3:2", "dog --ar 3:2"]),
        ("a { bird", ["a { bird"]),  # a brace without its partner is text
        ("a {bird} }", ["a bird }"]),
    ],
)
def test_expand_prompt(prompt: str, expected: list[str]) -> None:
    assert expand_prompt(prompt) == expected


@pytest.mark.parametrize(
    ("prompt", "needle"),
    [
        ("a --repeat 0", "`--repeat` takes a whole number from 1"),
        ("a --repeat", "`--repeat` takes a whole number from 1"),
        ("a --repeat x", "`--repeat` needs a whole number"),
        ("a --repeat 2 --r 3", "`--repeat` is given twice"),
        ("{a,b,c,d,e,f,g} {a,b,c,d,e,f,g}", "more than 40 jobs"),
        ("{a,b,c} --repeat 14", "more than 40 jobs"),
        ("{a}" * 21, "at most 20 { } groups"),
    ],
)
def test_bad_expansions_are_refused_clearly(prompt: str, needle: str) -> None:
    with pytest.raises(InvalidRequest) as info:
        expand_prompt(prompt)
    assert needle in info.value.user_message


@given(prompt_text)
def test_any_prompt_expands_or_is_refused_clearly(text: str) -> None:
    try:
        prompts = expand_prompt(text)
    except InvalidRequest as error:
        assert error.user_message
        return
    assert 1 <= len(prompts) <= MAX_EXPANSION
    assert all("--repeat" not in p and ("{" not in p or "}" not in p.split("{", 1)[1]) for p in prompts)
