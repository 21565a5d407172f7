"""Banned-word matching, side by side in one run: a naive case-insensitive word-boundary regex vs
generation.moderation.WordFilter. Prints time per prompt and how many obfuscated prompts each catches
(and how many innocent ones each wrongly refuses).

    .venv/bin/python bench/moderation_filter.py
"""

from __future__ import annotations

import random
import re
import time

from generation.moderation import WordFilter

BANNED = ["ass", "nazi", "sex", "gore", "bad word"] + [f"term{i}x" for i in range(295)]
OBFUSCATED = ["a.s.s", "a s s", "а\u0455\u0455", "àšş", "a$$", "a55", "n@zi", "N A Z I", "s3x", "𝐬𝐞𝐱",
              "s\u200be\u200bx", "g-o-r-e", "ｇｏｒｅ", "b.a.d w.o.r.d", "badword", "S_E_X"]
INNOCENT = ["a class act", "assets", "bass guitar", "Sussex", "unisex", "gorgeous", "a hole in the wall",
            "compass and glass", "badminton", "a nice word", "1990s", "4k"]
FILLER = "a lighthouse at dusk, oil painting, dramatic light, highly detailed, trending".split(", ")


def naive(words: list[str]) -> re.Pattern[str]:
    return re.compile(r"\b(" + "|".join(re.escape(w) for w in words) + r")\b", re.I)


def prompts(n: int) -> list[str]:
    rng = random.Random(0)
    out = []
    for _ in range(n):
        parts = [*rng.sample(FILLER, 3), rng.choice(OBFUSCATED + INNOCENT)]
        rng.shuffle(parts)
        out.append(", ".join(parts))
    return out


def main() -> None:
    corpus = prompts(2000)
    regex, wf = naive(BANNED), WordFilter(BANNED)
    t0 = time.perf_counter()
    for p in corpus:
        regex.search(p)
    t_regex = (time.perf_counter() - t0) / len(corpus)
    t0 = time.perf_counter()
    for p in corpus:
        wf.find(p)
    t_wf = (time.perf_counter() - t0) / len(corpus)
    caught_r = sum(regex.search(p) is not None for p in OBFUSCATED)
    caught_w = sum(wf.find(p) is not None for p in OBFUSCATED)
    false_r = sum(regex.search(p) is not None for p in INNOCENT)
    false_w = sum(wf.find(p) is not None for p in INNOCENT)
    print(f"{'':24}{'naive regex':>14}{'WordFilter':>14}")
    print(f"{'µs per prompt':24}{t_regex * 1e6:>14.1f}{t_wf * 1e6:>14.1f}")
    n_obf, n_inn = len(OBFUSCATED), len(INNOCENT)
    print(f"{'obfuscations caught':24}{f'{caught_r}/{n_obf}':>14}{f'{caught_w}/{n_obf}':>14}")
    print(f"{'innocent refused':24}{f'{false_r}/{n_inn}':>14}{f'{false_w}/{n_inn}':>14}")
    print(f"({len(BANNED)} banned entries, {len(corpus)} prompts)")


if __name__ == "__main__":
    main()
