"""Server wildcards: `a __colour__ bird` takes one entry of the server's list `colour` (moderators keep the
lists with /admin wildcards). The pick is drawn from the job's seed, so the same prompt with the same seed
picks the same words, and a list's entries are plain text (a `__name__` inside one is not expanded again:
no list can make another loop)."""

from __future__ import annotations

import random
import re
from collections.abc import Mapping, Sequence

from generation.errors import InvalidRequest

MAX_LISTS = 50
MAX_VALUES = 200
MAX_VALUE_CHARS = 100
NAME_RE = re.compile(r"[a-z0-9](?:[a-z0-9_-]{0,30}[a-z0-9])?")
# `__name__` with the name's own characters; `\w` would let `__a__b__` swallow the text between two.
WILDCARD_RE = re.compile(r"__([A-Za-z0-9](?:[A-Za-z0-9_-]{0,30}[A-Za-z0-9])?)__")


def fill_wildcards(prompt: str, lists: Mapping[str, Sequence[str]], seed: int) -> str:
    """Replace each `__name__` with an entry of `lists[name]` drawn with `seed` (each occurrence its own
    draw, in order). Raises InvalidRequest naming the first unknown wildcard."""
    if "__" not in prompt:
        return prompt
    # Each prompt's draws come from its own generator: another job's picks never shift these.
    rng = random.Random(seed)

    def pick(match: re.Match[str]) -> str:
        name = match.group(1).lower()
        values = lists.get(name)
        if not values:
            known = ", ".join(f"`__{n}__`" for n in sorted(lists)[:10]) or "none yet"
            raise InvalidRequest(f"Unknown wildcard `__{name}__`. This server's wildcards: {known}.")
        return values[rng.randrange(len(values))]

    return WILDCARD_RE.sub(pick, prompt)


def check_list(name: str, raw_values: str, existing: Mapping[str, Sequence[str]]) -> tuple[str, list[str]]:
    """A moderator's new list: its name and comma-separated entries, checked against the limits.
    Returns (name, entries); raises InvalidRequest saying which limit."""
    name = name.strip().strip("_").lower()
    if not NAME_RE.fullmatch(name):
        raise InvalidRequest("A wildcard name is 1 to 32 letters, digits, `-` or `_`, like `colour`.")
    values = list(dict.fromkeys(" ".join(v.split()) for v in raw_values.split(",")))
    values = [v for v in values if v]
    if not values:
        raise InvalidRequest("Give the entries separated by commas, like `red, green, deep blue`.")
    if len(values) > MAX_VALUES:
        raise InvalidRequest(f"A wildcard holds at most {MAX_VALUES} entries ({len(values)} given).")
    long = next((v for v in values if len(v) > MAX_VALUE_CHARS), None)
    if long is not None:
        raise InvalidRequest(f"Entries are at most {MAX_VALUE_CHARS} characters; `{long[:40]}…` is longer.")
    if name not in existing and len(existing) >= MAX_LISTS:
        raise InvalidRequest(f"This server has {MAX_LISTS} wildcards already: remove one first.")
    return name, values
