"""A member's prompt preferences, as Midjourney's /prefer: custom options (`--mine` standing for saved
text and flags such as `--ar 16:9 --stylize 300`) and a suffix added to every prompt. Applied to the
prompt text before anything else reads it (permutations, flags), so a preference can hold anything a
prompt can."""

from __future__ import annotations

import re
from collections.abc import Mapping

from generation.errors import InvalidRequest
from generation.validate import flag_matches, is_builtin_flag, parse_flags

MAX_OPTIONS = 20
MAX_VALUE_CHARS = 300
NAME_RE = re.compile(r"[a-z][a-z0-9_-]{0,31}")


def check_option(name: str, value: str, existing: Mapping[str, str]) -> str:
    """A new custom option's name (without its dashes, lower case); raises InvalidRequest when the name
    is taken by a built-in flag, malformed, or one too many. The value is checked by the caller, as a
    prompt."""
    name = name.strip().lstrip("-—–").lower()
    if not NAME_RE.fullmatch(name):
        raise InvalidRequest("An option name is a letter then up to 31 letters, digits, `-` or `_`, like "
                             "`portrait`.")
    if is_builtin_flag(name):
        raise InvalidRequest(f"`--{name}` is a built-in flag; choose another name.")
    if name not in existing and len(existing) >= MAX_OPTIONS:
        raise InvalidRequest(f"You have {MAX_OPTIONS} options already: remove one first.")
    check_text(value, f"`--{name}`")
    if any(m.group(1).lower() in existing or m.group(1).lower() == name for m in flag_matches(value)):
        raise InvalidRequest("An option cannot use another custom option.")
    return name


def check_text(value: str, what: str) -> None:
    if len(value) > MAX_VALUE_CHARS:
        raise InvalidRequest(f"{what} is at most {MAX_VALUE_CHARS} characters.")


def apply_preferences(prompt: str, options: Mapping[str, str], suffix: str | None) -> str:
    """`prompt` with each custom option replaced by its text and the suffix added. A flag the prompt sets
    itself beats the same flag in the suffix (the suffix's is left out), as an explicit choice should."""
    if options:
        pieces, last = [], 0
        for match in flag_matches(prompt):
            value = options.get(match.group(1).lower())
            if value is not None and not is_builtin_flag(match.group(1)):
                pieces += [prompt[last:match.start()], f" {value} "]
                last = match.end()
        prompt = " ".join(("".join(pieces) + prompt[last:]).split())
    if suffix:
        prompt = f"{prompt} {_suffix_without(suffix, prompt)}".strip()
    return prompt


def _suffix_without(suffix: str, prompt: str) -> str:
    """The suffix minus the flags `prompt` already sets (a malformed prompt keeps the whole suffix:
    build_request reports it)."""
    try:
        _, taken = parse_flags(prompt)
    except InvalidRequest:
        return suffix
    matches = flag_matches(suffix)
    if not matches:
        return suffix
    kept = [suffix[: matches[0].start()]]
    for i, match in enumerate(matches):
        end = matches[i + 1].start() if i + 1 < len(matches) else len(suffix)
        segment = suffix[match.start():end]
        try:
            _, flags = parse_flags(segment)
        except InvalidRequest:
            flags = {}
        if not (set(flags) & set(taken)) or set(flags) <= {"loras"}:
            kept.append(segment)
    return " ".join("".join(kept).split())
