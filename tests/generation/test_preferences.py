"""/prefer's prompt rewriting: custom options expand in place, the suffix is added, a flag the prompt sets
beats the suffix's, and names that would shadow a built-in flag or loop are refused."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from generation.errors import InvalidRequest
from generation.preferences import MAX_OPTIONS, apply_preferences, check_option
from generation.validate import expand_prompt, parse_flags
from generation.wildcards import fill_wildcards

OPTIONS = {"mine": "--ar 16:9 --stylize 300", "moody": "dark, rainy"}


def test_options_expand_in_place_and_the_suffix_yields_to_the_prompts_own_flags() -> None:
    rewritten = apply_preferences("a city --mine at night", OPTIONS, None)
    assert rewritten == "a city --ar 16:9 --stylize 300 at night"
    assert parse_flags(rewritten) == ("a city at night", {"aspect": "16:9", "stylize": 300})
    assert apply_preferences("a city —moody", OPTIONS, None) == "a city dark, rainy"
    assert apply_preferences("a city", {}, "film grain --ar 3:2 --no people") == (
        "a city film grain --ar 3:2 --no people")
    # The prompt's --ar wins; the rest of the suffix stays.
    rewritten = apply_preferences("a city --ar 1:1", {}, "film grain --ar 3:2 --no people")
    assert parse_flags(rewritten) == ("a city film grain", {"aspect": "1:1", "negative": "people"})
    # Unknown flags are left for build_request to name.
    assert apply_preferences("a city --nope", OPTIONS, None) == "a city --nope"


@given(st.text(max_size=60), st.one_of(st.none(), st.text(max_size=30)))
def test_any_prompt_and_suffix_give_text(prompt: str, suffix: str | None) -> None:
    assert isinstance(apply_preferences(prompt, OPTIONS, suffix), str)


def test_option_names_are_checked() -> None:
    assert check_option("--Portrait", "--ar 2:3", {}) == "portrait"
    for name, value, existing, message in [
        ("ar", "--ar 2:3", {}, "built-in"),
        ("repeat", "x", {}, "built-in"),
        ("9lives", "x", {}, "letter"),
        ("loop", "--mine red", OPTIONS, "another custom option"),
        ("self", "--self", {}, "another custom option"),
        ("new", "x", {f"o{i}": "x" for i in range(MAX_OPTIONS)}, "remove one first"),
        ("long", "x" * 301, {}, "300 characters"),
    ]:
        with pytest.raises(InvalidRequest, match=message):
            check_option(name, value, existing)


@given(st.text(max_size=60), st.one_of(st.none(), st.text(max_size=20)), st.integers(0, 2**32 - 1))
def test_the_whole_prompt_language_gives_prompts_or_a_clear_error(prompt: str, suffix: str | None,
                                                                  seed: int) -> None:
    """/imagine's order: preferences, then permutations and --repeat, then each job's wildcards."""
    try:
        for expanded in expand_prompt(apply_preferences(prompt, OPTIONS, suffix)):
            assert isinstance(fill_wildcards(expanded, {"colour": ["red"]}, seed), str)
    except InvalidRequest as exc:
        assert exc.user_message
