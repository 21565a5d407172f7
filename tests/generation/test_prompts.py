"""A1111 prompt syntax and long prompts: the parser (property tests), the 77-token chunks, and what they
do to the pixels of the real tiny SD1.x and SDXL pipelines."""

from __future__ import annotations

import math
import re
from typing import Any

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from PIL import Image

from generation.prompts import MAX_CHUNKS, MAX_WEIGHT, call_arguments, chunk, cut_notes, parse, plain_text
from generation.request import RenderRequest
from generation.tiny import _tokenizer
from generation.validate import RequestDraft, build_request, upscale_of, variation_of

SYNTAX = "()[]\\:"
plain = st.text(st.characters(blacklist_characters=SYNTAX, blacklist_categories=("Cs",)), min_size=1).filter(
    lambda t: "BREAK" not in t
)
weights = st.floats(min_value=0.0, max_value=3.0, allow_nan=False).map(lambda w: round(w, 2))


def _pieces(text: str) -> list[tuple[str, float]]:
    return [piece for segment in parse(text) for piece in segment]


# -- the parser ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("a red fox", [("a red fox", 1.0)]),
        ("(red) fox", [("red", 1.1), (" fox", 1.0)]),
        ("((red)) fox", [("red", 1.1 * 1.1), (" fox", 1.0)]),
        ("[red] fox", [("red", 1 / 1.1), (" fox", 1.0)]),
        ("(red:1.5) fox", [("red", 1.5), (" fox", 1.0)]),
        ("( red : 0.5 ) fox", [(" red ", 0.5), (" fox", 1.0)]),
        ("((red:1.5)) fox", [("red", 1.5 * 1.1), (" fox", 1.0)]),
        ("(red:1.0) fox", [("red fox", 1.0)]),  # equal weights merge: the same tokens as `red fox`
        (r"\(red\) fox", [("(red) fox", 1.0)]),
        ("a:b c", [("a:b c", 1.0)]),
        ("red:1.2) fox", [("red:1.2) fox", 1.0)]),  # a weight without its bracket is text
        ("(red fox", [("(red fox", 1.0)]),  # unclosed: literal, not "weight the rest" as A1111
        ("red) [fox", [("red) [fox", 1.0)]),
        ("(a:99999)", [("a", MAX_WEIGHT)]),  # a silly weight is bounded, never inf / NaN
    ],
)
def test_a1111_syntax(text: str, expected: list[tuple[str, float]]) -> None:
    got = _pieces(text)
    assert [t for t, _ in got] == [t for t, _ in expected]
    assert [w for _, w in got] == pytest.approx([w for _, w in expected])


def test_break_starts_a_segment() -> None:
    assert parse("a castle BREAK (a moat)") == [[("a castle", 1.0)], [("a moat", 1.1)]]
    assert parse("BREAKFAST") == [[("BREAKFAST", 1.0)]]


@given(plain)
def test_text_without_syntax_is_one_piece_of_weight_one(text: str) -> None:
    assert _pieces(text) == [(text, 1.0)]


@given(st.text(max_size=200))
def test_any_text_parses_to_bounded_weights_and_keeps_its_words(text: str) -> None:
    segments = parse(text)
    for segment in segments:
        for piece, weight in segment:
            assert piece and math.isfinite(weight) and abs(weight) <= MAX_WEIGHT
    # Syntax goes, words stay: every character outside the syntax is kept, in order.
    words = re.sub(r"BREAK|[()\[\]\\:\s.\d+-]", "", text)
    assert re.sub(r"[()\[\]\\:\s.\d+-]", "", plain_text(segments)) == words


@given(plain, st.lists(st.one_of(st.just("("), st.just("["), weights), max_size=6))
def test_nested_brackets_multiply(word: str, wraps: list[Any]) -> None:
    text, expected = word, 1.0
    for wrap in wraps:
        if wrap == "(":
            text, expected = f"({text})", expected * 1.1
        elif wrap == "[":
            text, expected = f"[{text}]", expected / 1.1
        else:
            text, expected = f"({text}:{wrap})", expected * wrap
    pieces = _pieces(text)
    assert "".join(t for t, _ in pieces) == word
    assert [w for _, w in pieces] == pytest.approx([min(expected, MAX_WEIGHT)], abs=1e-9)


@given(st.text(max_size=100).filter(lambda t: "BREAK" not in t))
def test_escaped_text_is_literal(text: str) -> None:
    escaped = re.sub(r"([()\[\]\\])", r"\\\1", text)
    pieces = _pieces(escaped)
    assert "".join(t for t, _ in pieces) == text
    assert all(w == 1.0 for _, w in pieces)


@given(plain, plain, st.sampled_from(["(", ")", "[", "]"]))
def test_a_bracket_without_its_partner_is_text(left: str, right: str, bracket: str) -> None:
    assert _pieces(left + bracket + right) == [(left + bracket + right, 1.0)]


# -- chunks -------------------------------------------------------------------------------------


def test_a_short_prompt_is_laid_out_as_the_pipeline_lays_it_out() -> None:
    tokenizer = _tokenizer()
    own = tokenizer("a red fox", padding="max_length", max_length=77, truncation=True).input_ids
    chunked = chunk(tokenizer, "a red fox")
    assert chunked.cut_at is None
    assert [ids for ids, _ in chunked.chunks] == [own]
    assert chunk(tokenizer, "").chunks[0][0] == tokenizer("", padding="max_length", max_length=77).input_ids


def test_long_prompts_fill_75_token_chunks_and_stop_at_the_cap() -> None:
    tokenizer = _tokenizer()  # one token per character
    two = chunk(tokenizer, "x" * 100)
    assert len(two.chunks) == 2 and two.cut_at is None
    for ids, weights in two.chunks:
        assert len(ids) == len(weights) == 77
        assert ids[0] == tokenizer.bos_token_id and tokenizer.eos_token_id in ids[1:]
    broken = chunk(tokenizer, "(cat) BREAK dog")
    assert len(broken.chunks) == 2  # BREAK starts a new chunk
    assert broken.chunks[0][1][1:4] == pytest.approx([1.1] * 3)
    over = chunk(tokenizer, "y" * (75 * MAX_CHUNKS + 10))
    assert len(over.chunks) == MAX_CHUNKS and over.cut_at == 75 * MAX_CHUNKS


def test_the_note_counts_the_words_that_were_used() -> None:
    tokenizer = _tokenizer()
    words = " ".join(f"w{i:03d}" for i in range(100))  # 4 tokens a word: 225 tokens end inside the 57th
    note = "the prompt was cut after 56 words (the model reads at most 225 tokens)"
    assert cut_notes(tokenizer, words) == (note,)
    assert cut_notes(tokenizer, "short", words)[0].startswith("the negative prompt was cut after 56 words")
    assert cut_notes(tokenizer, "a fox", "blur") == ()


# -- pixels of the real tiny pipelines --------------------------------------------------------------

BASE = "a lighthouse on a cliff at dusk, " * 3  # 96 tokens of the tiny model's one-per-character tokenizer


def _req(prompt: str, seeds: tuple[int, ...] = (1,), **kw: Any) -> RenderRequest:
    base: dict[str, Any] = {"prompt": prompt, "model": "tiny", "width": 64, "height": 64, "steps": 3,
                            "guidance": 7.0, "sampler": "euler", "seeds": seeds}
    base.update(kw)
    return RenderRequest(**base)


def _xl(prompt: str, seeds: tuple[int, ...] = (1,), **kw: Any) -> RenderRequest:
    return _req(prompt, seeds, model="tiny-xl", width=128, height=128, steps=2, **kw)


def _maxdiff(a: Image.Image, b: Image.Image) -> int:
    return int(np.abs(np.asarray(a, dtype=np.int16) - np.asarray(b, dtype=np.int16)).max())


def _one(engine: Any, request: RenderRequest, source: Image.Image | None = None) -> Image.Image:
    return engine.render([request], None if source is None else [source])[0][0]


@pytest.mark.parametrize("model", ["tiny", "tiny-xl"])
def test_short_unweighted_prompts_encode_exactly_as_the_pipeline_does(tiny_registry: Any, model: str) -> None:
    import torch

    pipe = tiny_registry.pipeline(model)
    prompts, negatives = ["a red fox", "a boat"], ["", "blur"]
    keys = ["prompt_embeds", "negative_prompt_embeds",
            "pooled_prompt_embeds", "negative_pooled_prompt_embeds"]
    for negative in (negatives, ["", ""]):
        with torch.inference_mode():
            own = pipe.encode_prompt(prompts, device="cpu", num_images_per_prompt=1,
                                     do_classifier_free_guidance=True,
                                     negative_prompt=negative if any(negative) else None)
        ours = call_arguments(pipe, prompts, negative)
        assert [k for k in keys if k in ours] == keys[: len([t for t in own if t is not None])]
        for key, tensor in zip(keys, own, strict=False):
            if tensor is not None:
                assert torch.equal(ours[key], tensor), key  # bit for bit: today's pixels are kept


def test_words_past_77_tokens_change_the_pixels(tiny_engine: Any) -> None:
    a = _one(tiny_engine, _req(BASE + "red fox"))
    b = _one(tiny_engine, _req(BASE + "blue cat"))
    assert _maxdiff(a, b) > 0  # before chunking both were cut to the same 75 tokens


def test_a_weight_changes_the_pixels_and_weight_one_does_not(tiny_engine: Any) -> None:
    plain_image = _one(tiny_engine, _req("red fox"))
    assert _maxdiff(_one(tiny_engine, _req("(red:1.0) fox")), plain_image) == 0
    assert _maxdiff(_one(tiny_engine, _req("(red:1.5) fox")), plain_image) > 0
    assert _maxdiff(_one(tiny_engine, _req("[red] fox")), plain_image) > 0


def test_sdxl_long_and_weighted_prompts(tiny_engine: Any) -> None:
    a = _one(tiny_engine, _xl(BASE + "red fox"))
    b = _one(tiny_engine, _xl(BASE + "blue cat"))
    assert a.size == (128, 128) and _maxdiff(a, b) > 0
    with_negative = _one(tiny_engine, _xl(BASE + "red fox", negative="blur"))
    long_negative = _one(tiny_engine, _xl(BASE + "red fox", negative=BASE + "blur"))
    assert _maxdiff(with_negative, a) > 0 and _maxdiff(long_negative, with_negative) > 0
    assert _maxdiff(_one(tiny_engine, _xl("(red:1.5) fox")), _one(tiny_engine, _xl("red fox"))) > 0


@pytest.mark.parametrize("make", [_req, _xl])
def test_a_batch_of_long_and_short_prompts_equals_solo_renders(tiny_engine: Any, make: Any) -> None:
    requests = [make(BASE + "red fox", (3,)), make("a boat", (4, 5)),
                make("(a boat:1.3)", (6,), negative=BASE)]
    batched = tiny_engine.render(requests)
    for request, images in zip(requests, batched, strict=True):
        for got, want in zip(images, tiny_engine.render([request])[0], strict=True):
            assert _maxdiff(got, want) <= 1  # CPU batched maths: float rounding only (DESIGN §5)


def test_variation_and_upscale_read_the_whole_prompt(tiny_engine: Any) -> None:
    parents = [_req(BASE + tail, (9,)) for tail in ("red fox", "blue cat")]
    source = _one(tiny_engine, parents[0])
    varied = [_one(tiny_engine, variation_of(p, 0, strong=True, source="k", seed=2), source) for p in parents]
    assert _maxdiff(*varied) > 0
    upscaled = [_one(tiny_engine, upscale_of(p, 0, "k"), source) for p in parents]
    assert upscaled[0].size == (128, 128) and _maxdiff(*upscaled) > 0


def test_an_over_cap_prompt_carries_a_note(tiny_registry: Any, tiny_engine: Any) -> None:
    # (tiny_engine: the model is loaded, as in a running bot; notes need its tokenizer.)
    words = " ".join(f"w{i:03d}" for i in range(100))
    request = build_request(RequestDraft(prompt=words, model="tiny"), tiny_registry)
    assert request.notes == ("the prompt was cut after 56 words (the model reads at most 225 tokens)",)
    assert RenderRequest.from_json(request.to_json()) == request  # stored with the job
    assert build_request(RequestDraft(prompt=BASE, model="tiny"), tiny_registry).notes == ()


def test_a_model_not_loaded_here_gives_no_note_and_is_not_loaded(tiny_data_dir: Any) -> None:
    from generation.models import ModelRegistry

    # Counting needs the model's tokenizer; building a request (on the event loop) must never load it.
    registry = ModelRegistry([("tiny", "tiny")], tiny_data_dir, device="cpu")
    words = " ".join(f"w{i:03d}" for i in range(100))
    assert build_request(RequestDraft(prompt=words), registry).notes == ()
    assert not registry.is_loaded("tiny")
