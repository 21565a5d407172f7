from __future__ import annotations

from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from generation.errors import InvalidRequest
from generation.request import Kind, RenderRequest
from generation.validate import (
    ASPECTS,
    MAX_SEED,
    SAMPLER_NAMES,
    STRONG_STRENGTH,
    SUBTLE_STRENGTH,
    Limits,
    RequestDraft,
    build_request,
    max_pixels,
    parse_flags,
    size_for,
    upscale_of,
    variation_of,
)

# -- flags --------------------------------------------------------------------------------------


def test_parse_flags_strips_every_flag() -> None:
    prompt, flags = parse_flags(
        "a castle at night --ar 16:9 --seed 42 --no cars, trees --steps 30 --cfg 6.5 --n 2"
    )
    assert prompt == "a castle at night"
    assert flags == {
        "aspect": "16:9",
        "seed": 42,
        "negative": "cars, trees",
        "steps": 30,
        "guidance": 6.5,
        "count": 2,
    }


def test_parse_flags_keeps_text_after_a_one_value_flag_and_accepts_phone_dashes() -> None:
    prompt, flags = parse_flags("a cat —ar 3:2 sitting on a mat --seed 1")
    assert prompt == "a cat sitting on a mat"
    assert flags == {"aspect": "3:2", "seed": 1}


def test_parse_flags_reduces_ratios_and_ignores_double_dash_text() -> None:
    prompt, flags = parse_flags("before -- after --ar 32:18")
    assert prompt == "before -- after"
    assert flags["aspect"] == "16:9"


@pytest.mark.parametrize(
    ("prompt", "needle"),
    [
        ("cat --foo 3", "`--foo`"),
        ("cat --seed", "`--seed` needs a value"),
        ("cat --seed abc", "`--seed` needs a whole number"),
        ("cat --steps 2.5", "`--steps` needs a whole number"),
        ("cat --cfg lots", "`--cfg` needs a number"),
        ("cat --cfg nan", "`--cfg` needs a number"),
        ("cat --ar wide", "`--ar` must look like 16:9"),
        ("cat --ar 0:1", "`--ar` sides must be above zero"),
        ("cat --ar 10:1", "too stretched"),
        ("cat --seed 1 --seed 2", "`--seed` is given twice"),
        ("cat --no , ,", "`--no` needs at least one word"),
    ],
)
def test_parse_flags_errors_name_the_flag(prompt: str, needle: str) -> None:
    with pytest.raises(InvalidRequest) as info:
        parse_flags(prompt)
    assert needle in info.value.user_message


# -- sizes --------------------------------------------------------------------------------------


@pytest.mark.parametrize("family", ["sd15", "sdxl"])
@pytest.mark.parametrize("aspect", ASPECTS)
def test_aspect_sizes_are_multiples_of_8_near_native_area(aspect: str, family: str) -> None:
    w, h = size_for(aspect, family)
    base = 512 if family == "sd15" else 1024
    aw, ah = (int(x) for x in aspect.split(":"))
    assert w % 8 == 0 and h % 8 == 0
    assert abs(w * h / base**2 - 1) < 0.1
    assert abs(w / h - aw / ah) < 0.1
    # A 2x upscale of every preset still fits the default pixel cap.
    assert (2 * w) * (2 * h) <= Limits().max_pixels[family]


# -- build_request ------------------------------------------------------------------------------


def test_defaults_come_from_the_model(tiny_registry: Any) -> None:
    req = build_request(RequestDraft("a lighthouse"), tiny_registry)
    spec = tiny_registry.default
    assert (req.model, req.steps, req.guidance, req.sampler) == (
        spec.name,
        spec.default_steps,
        spec.default_guidance,
        spec.default_sampler,
    )
    assert (req.width, req.height) == (512, 512)
    assert req.count == 1 and 0 <= req.seeds[0] <= MAX_SEED
    xl = build_request(RequestDraft("a lighthouse", model="tiny-xl", aspect="1:1"), tiny_registry)
    assert (xl.width, xl.height) == (1024, 1024)


def test_flags_override_options_and_seeds_follow(tiny_registry: Any) -> None:
    draft = RequestDraft(
        "a lighthouse --seed 7 --n 4 --ar 3:2 --no fog", negative="blur", seed=1, count=1, aspect="1:1"
    )
    req = build_request(draft, tiny_registry)
    assert req.prompt == "a lighthouse"
    assert req.seeds == (7, 8, 9, 10)
    assert (req.width, req.height) == size_for("3:2", "sd15")
    assert req.negative == "blur, fog"


def test_seeds_wrap_at_the_top_of_the_range(tiny_registry: Any) -> None:
    req = build_request(RequestDraft("x", seed=MAX_SEED, count=2), tiny_registry)
    assert req.seeds == (MAX_SEED, 0)


def test_sampler_aliases(tiny_registry: Any) -> None:
    req = build_request(RequestDraft("x", sampler="DPM++ 2M Karras"), tiny_registry)
    assert req.sampler == "dpmpp_2m_karras"


@pytest.mark.parametrize(
    ("draft", "needle"),
    [
        (RequestDraft(""), "Write a prompt"),
        (RequestDraft("  --seed 3"), "Write a prompt"),
        (RequestDraft("x" * 1600), "too long"),
        (RequestDraft("x", negative="n" * 1001), "negative prompt is too long"),
        (RequestDraft("x", model="nope"), "Unknown model `nope`"),
        (RequestDraft("x", steps=0), "Steps must be between 1 and 80"),
        (RequestDraft("x --steps 500"), "Steps must be between 1 and 80"),
        (RequestDraft("x", guidance=-1.0), "Guidance must be between 0 and 30"),
        (RequestDraft("x", guidance=float("inf")), "Guidance must be a number"),
        (RequestDraft("x", sampler="warp"), "Unknown sampler `warp`"),
        (RequestDraft("x", count=5), "Count must be between 1 and 4"),
        (RequestDraft("x --n 0"), "Count must be between 1 and 4"),
        (RequestDraft("x", seed=-1), "Seed must be a whole number"),
        (RequestDraft("x", seed=MAX_SEED + 1), "Seed must be a whole number"),
        (RequestDraft("x", aspect="9:1"), "too stretched"),
        (RequestDraft("x", strength=0.5), "Strength only applies"),
        (RequestDraft("x", kind=Kind.IMG2IMG), "needs a source image"),
    ],
)
def test_every_bound_gives_a_user_message(tiny_registry: Any, draft: RequestDraft, needle: str) -> None:
    with pytest.raises(InvalidRequest) as info:
        build_request(draft, tiny_registry)
    assert needle in info.value.user_message


def test_img2img_bounds(tiny_registry: Any) -> None:
    ok = build_request(
        RequestDraft("x", kind=Kind.IMG2IMG, source="k", strength=0.5), tiny_registry, source_size=(800, 600)
    )
    assert ok.strength == 0.5 and ok.source == "k"
    assert ok.width % 8 == 0 and abs(ok.width / ok.height - 800 / 600) < 0.05
    with pytest.raises(InvalidRequest, match="Strength must be between"):
        build_request(
            RequestDraft("x", kind=Kind.IMG2IMG, source="k", strength=1.5),
            tiny_registry,
            source_size=(64, 64),
        )
    with pytest.raises(InvalidRequest, match="could not be read"):
        build_request(RequestDraft("x", kind=Kind.IMG2IMG, source="k"), tiny_registry)
    with pytest.raises(InvalidRequest, match="too large"):
        build_request(
            RequestDraft("x", kind=Kind.UPSCALE, source="k"), tiny_registry, source_size=(1024, 1024)
        )


def test_pixel_limit_comes_from_limits(tiny_registry: Any) -> None:
    limits = Limits(max_pixels={"sd15": 200_000, "sdxl": 200_000})
    with pytest.raises(InvalidRequest, match="too large"):
        build_request(RequestDraft("x"), tiny_registry, limits)


# -- variation / upscale ------------------------------------------------------------------------


def _parent() -> RenderRequest:
    return RenderRequest(
        prompt="p",
        model="tiny",
        width=624,
        height=416,
        steps=4,
        guidance=7.0,
        sampler="euler",
        seeds=(5, 6, 7, 8),
    )


def test_variation_of_uses_a_fresh_seed_and_the_two_strengths() -> None:
    parent = _parent()
    subtle = variation_of(parent, 2, strong=False, source="blob")
    strong = variation_of(parent, 2, strong=True, source="blob", seed=99)
    assert subtle.kind == Kind.VARIATION and subtle.strength == SUBTLE_STRENGTH
    assert strong.strength == STRONG_STRENGTH and strong.seeds == (99,)
    assert (strong.width, strong.height, strong.source) == (624, 416, "blob")
    assert subtle.batch_key != strong.batch_key


def test_upscale_of_doubles_size_and_keeps_the_image_seed() -> None:
    up = upscale_of(_parent(), 1, "blob")
    assert (up.width, up.height, up.seeds, up.kind) == (1248, 832, (6,), Kind.UPSCALE)
    with pytest.raises(InvalidRequest, match="already as large"):
        upscale_of(up, 0, "blob2", family="sd15")
    with pytest.raises(InvalidRequest, match="no image 5"):
        upscale_of(_parent(), 4, "blob")


def test_upscale_of_a_variation_of_an_upscale_meets_the_family_cap() -> None:
    # Vary keeps the upscaled size, so a second Upscale is refused for SD1.5 but fine for SDXL.
    varied = variation_of(upscale_of(_parent(), 0, "blob", family="sd15"), 0, strong=False, source="b2")
    assert varied.width * varied.height <= max_pixels("sd15")
    with pytest.raises(InvalidRequest, match="already as large"):
        upscale_of(varied, 0, "b3", family="sd15")
    assert upscale_of(varied, 0, "b3", family="sdxl").width == 2 * varied.width
    assert max_pixels("sd15") < max_pixels("sdxl")


def test_request_json_round_trip(tiny_registry: Any) -> None:
    req = build_request(RequestDraft("x --no y --n 3"), tiny_registry)
    assert RenderRequest.from_json(req.to_json()) == req


# -- property tests -----------------------------------------------------------------------------

_flag_words = st.sampled_from(
    [
        "--ar",
        "--seed",
        "--no",
        "--steps",
        "--cfg",
        "--n",
        "--sampler",
        "--model",
        "--x",
        "—ar",
        "--",
        "-",
        ":",
    ]
)
_values = st.one_of(
    st.integers(-(2**40), 2**40).map(str),
    st.floats(allow_nan=True, allow_infinity=True).map(str),
    st.sampled_from(["16:9", "1:1", "0:0", "3:1", "a,b", "euler", "tiny", "tiny-xl", ""]),
    st.text(max_size=8),
)
_prompts = st.lists(st.one_of(_flag_words, _values, st.text(max_size=12)), max_size=12).map(" ".join)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(prompt=_prompts | st.text(max_size=200))
def test_flags_never_raise_anything_but_invalid_request(prompt: str) -> None:
    try:
        clean, flags = parse_flags(prompt)
    except InvalidRequest as exc:
        assert exc.user_message
        return
    # What is left holds no flag any more, so parsing is idempotent.
    assert parse_flags(clean) == (clean, {})
    assert set(flags) <= {"aspect", "seed", "negative", "steps", "guidance", "count", "sampler", "model"}


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    prompt=_prompts,
    seed=st.none() | st.integers(-5, 2**33),
    steps=st.none() | st.integers(-5, 200),
    guidance=st.none() | st.floats(allow_nan=True, allow_infinity=True),
    count=st.none() | st.integers(-2, 8),
    aspect=st.none() | st.sampled_from([*ASPECTS, "7:3", "1:9", "bad"]),
    sampler=st.none() | st.sampled_from([*SAMPLER_NAMES, "Euler a", "nope"]),
    model=st.none() | st.sampled_from(["tiny", "tiny-xl", "other"]),
)
def test_build_request_gives_valid_requests_or_invalid_request(
    tiny_registry: Any,
    prompt: str,
    seed: int | None,
    steps: int | None,
    guidance: float | None,
    count: int | None,
    aspect: str | None,
    sampler: str | None,
    model: str | None,
) -> None:
    draft = RequestDraft(
        prompt,
        seed=seed,
        steps=steps,
        guidance=guidance,
        count=count,
        aspect=aspect,
        sampler=sampler,
        model=model,
    )
    try:
        req = build_request(draft, tiny_registry)
    except InvalidRequest as exc:
        assert exc.user_message
        return
    limits = Limits()
    assert req.prompt and len(req.prompt) <= limits.max_prompt_chars
    assert 1 <= req.steps <= limits.max_steps
    assert limits.min_guidance <= req.guidance <= limits.max_guidance
    assert 1 <= req.count <= limits.max_count
    assert all(0 <= s <= MAX_SEED for s in req.seeds)
    assert req.width % 8 == 0 and req.height % 8 == 0
    assert req.sampler in SAMPLER_NAMES
