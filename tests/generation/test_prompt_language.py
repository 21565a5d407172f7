"""Midjourney's prompt language: multi-prompts `cat:: dog::2` with weights (negative too), as weighted text
embeddings on the real tiny SD1.x and SDXL pipelines, and the parsing as properties (any string is a
request or a clear error, never a crash)."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image

from generation.errors import InvalidRequest
from generation.prompts import MAX_PARTS, MAX_WEIGHT, call_arguments, chunk_count, split_multi
from generation.request import RenderRequest
from generation.validate import RequestDraft, build_request

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
