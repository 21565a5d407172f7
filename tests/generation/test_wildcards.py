"""Server wildcards: drawn with the seed (same seed, same words; every occurrence its own draw), an
unknown name refused by name, entries never expanded again, and the moderators' limits."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from generation.errors import InvalidRequest
from generation.wildcards import MAX_LISTS, MAX_VALUE_CHARS, MAX_VALUES, check_list, fill_wildcards

LISTS = {"colour": ["red", "green", "blue", "gold"], "animal": ["owl", "__colour__ fox"]}


def test_the_seed_decides_the_pick_and_each_occurrence_draws_again() -> None:
    picks = {fill_wildcards("a __colour__ bird", LISTS, seed) for seed in range(40)}
    assert picks == {f"a {c} bird" for c in LISTS["colour"]}  # every entry comes up
    for seed in range(20):
        assert fill_wildcards("a __colour__ bird", LISTS, seed) == fill_wildcards("a __colour__ bird",
                                                                                  LISTS, seed)
    pairs = {fill_wildcards("__colour__ and __colour__", LISTS, seed) for seed in range(40)}
    assert any(a != b for a, b in (p.split(" and ") for p in pairs))


def test_unknown_wildcards_are_refused_by_name_and_entries_stay_text() -> None:
    with pytest.raises(InvalidRequest, match=r"`__size__`.*`__animal__`, `__colour__`"):
        fill_wildcards("a __size__ __colour__ cat", LISTS, 1)
    assert "__colour__ fox" in {fill_wildcards("__animal__", LISTS, s) for s in range(30)}
    assert fill_wildcards("snake_case and __ alone", LISTS, 3) == "snake_case and __ alone"


@given(st.text(max_size=80), st.integers(0, 2**32 - 1))
def test_any_prompt_gives_text_or_a_clear_error(prompt: str, seed: int) -> None:
    try:
        assert isinstance(fill_wildcards(prompt, LISTS, seed), str)
    except InvalidRequest as exc:
        assert "Unknown wildcard" in exc.user_message


def test_lists_are_checked_against_the_limits() -> None:
    assert check_list(" __Colour__ ", "red, , green,red ,  deep   blue", {}) == ("colour",
                                                                            ["red", "green", "deep blue"])
    for name, values, existing, message in [
        ("bad name!", "a", {}, "1 to 32"),
        ("ok", " , ", {}, "separated by commas"),
        ("ok", ",".join(str(i) for i in range(MAX_VALUES + 1)), {}, "at most"),
        ("ok", "x" * (MAX_VALUE_CHARS + 1), {}, "characters"),
        ("new", "a", {f"l{i}": ["a"] for i in range(MAX_LISTS)}, "remove one first"),
    ]:
        with pytest.raises(InvalidRequest, match=message):
            check_list(name, values, existing)
    # Replacing a list is allowed at the cap.
    assert check_list("l0", "b", {f"l{i}": ["a"] for i in range(MAX_LISTS)}) == ("l0", ["b"])
