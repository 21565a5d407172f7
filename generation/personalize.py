"""`--p`: a member's personal style, learnt from the jobs whose images they starred (⭐).

Prompts are comma-separated phrases, the first usually the subject ("a red boat") and the rest the look
("watercolor", "soft light"). The personal style is the look phrases that recur across the starred jobs
(in at least two of them and a third of them), most frequent first, as a suffix, plus the LoRA used most
often among them (same rule) at its mean weight. Transparent and reproducible: the same stars make the
same style. Each change is a new version (`--p v2` names one), so old prompts keep meaning what they meant.
A version also keeps the latest starred images: on a model with an IP-Adapter they join as its style reference
(bot/personal.py), so the adapter averages their embeddings (the mean image embedding of the stars).
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass

from generation.errors import InvalidRequest

MIN_LIKED = 3
MAX_PHRASES = 5
MAX_PHRASE_CHARS = 60
_P_FLAG = re.compile(r"(?:(?<=\s)|^)(?:--|—|–)p(?=\s|$)(?:\s+v(\d{1,6})(?=\s|$))?", re.I)
# A1111 emphasis and weights are not part of a phrase's meaning: "(watercolor:1.2)" is "watercolor".
_EMPHASIS = re.compile(r"[()\[\]]|:\s*-?\d+(?:\.\d+)?")
_FLAG = re.compile(r"(?:(?<=\s)|^)(?:--|—|–)[A-Za-z]")


@dataclass(frozen=True)
class Liked:
    """One starred job: its prompt (flags already taken out) and its LoRAs."""

    prompt: str
    loras: tuple[tuple[str, float], ...] = ()


@dataclass(frozen=True)
class Profile:
    suffix: str
    lora: str | None
    lora_weight: float

    @property
    def empty(self) -> bool:
        return not self.suffix and self.lora is None


def p_flag_in(prompt: str) -> tuple[str, bool, int | None]:
    """(`prompt` without `--p [vN]`, whether it was there, the version asked for or None for the newest)."""
    found = list(_P_FLAG.finditer(prompt))
    if not found:
        return prompt, False, None
    if len(found) > 1:
        raise InvalidRequest("Use `--p` once per prompt.")
    version = found[0].group(1)
    return _P_FLAG.sub(" ", prompt).strip(), True, None if version is None else int(version)


def look_phrases(prompt: str) -> list[str]:
    """The phrases after the subject, normalised (lowercase, no emphasis or weights), each once."""
    flag = _FLAG.search(prompt)
    words = prompt[:flag.start()] if flag else prompt
    phrases = [" ".join(_EMPHASIS.sub(" ", p).lower().split()) for p in words.split(",")[1:]]
    return list(dict.fromkeys(p for p in phrases if p and len(p) <= MAX_PHRASE_CHARS))


def profile_of(liked: Sequence[Liked]) -> Profile:
    """The recurring look of `liked` (see the module docstring); empty when nothing recurs."""
    needed = max(2, -(-len(liked) // 3))  # at least two jobs and a third of them
    phrases: Counter[str] = Counter()
    order: dict[str, int] = {}
    loras: Counter[str] = Counter()
    weights: dict[str, list[float]] = {}
    for job in liked:
        for phrase in look_phrases(job.prompt):
            phrases[phrase] += 1
            order.setdefault(phrase, len(order))
        for name, weight in dict(job.loras).items():
            loras[name] += 1
            weights.setdefault(name, []).append(weight)
    chosen = sorted((p for p, n in phrases.items() if n >= needed), key=lambda p: (-phrases[p], order[p]))
    common = sorted((n for n, c in loras.items() if c >= needed), key=lambda n: (-loras[n], n))
    lora = common[0] if common else None
    weight = round(sum(weights[lora]) / len(weights[lora]), 2) if lora else 1.0
    return Profile(suffix=", ".join(chosen[:MAX_PHRASES]), lora=lora, lora_weight=weight)
