"""Banned-word matching, side by side in one run: a naive case-insensitive word-boundary regex vs
generation.moderation.WordFilter, on the corpus of bench/moderation_corpus.py (obfuscated prompts by
trick, realistic innocent prompts). Prints the catch rate per trick, the innocent prompts refused, and
the time per prompt of the calls bot/policy.py makes for each request: the guild's WordFilter for its
list (`WordFilter.cached`), its `find`, and the NSFW-terms filter's `find`; and what building the guild
filter on every request (as before) cost.

    .venv/bin/python bench/moderation_filter.py
"""

from __future__ import annotations

import sys
from pathlib import Path

# Run as a script, bench/ would be first on sys.path and bench/bot.py would shadow the bot package.
sys.path[0] = str(Path(__file__).resolve().parents[1])

import re  # noqa: E402
import time  # noqa: E402
from collections import Counter  # noqa: E402

from bench.moderation_corpus import GUILD_WORDS, innocent, obfuscations  # noqa: E402
from bot.policy import NSFW_TERMS, is_nsfw_prompt  # noqa: E402
from generation.moderation import WordFilter  # noqa: E402

# A large guild list: the realistic words plus filler entries, 300 in all.
GUILD_LIST = GUILD_WORDS + [f"term{i}x" for i in range(300 - len(GUILD_WORDS))]


def naive(words: list[str]) -> re.Pattern[str]:
    return re.compile(r"\b(" + "|".join(re.escape(w) for w in words) + r")\b", re.I)


def as_policy(prompt: str) -> bool:
    """What check_request does per request: the guild filter from its list, then the NSFW terms."""
    return WordFilter.cached(GUILD_LIST).find(prompt) is not None or is_nsfw_prompt(prompt)


def per_prompt_us(check: object, prompts: list[str], rounds: int = 3) -> float:
    best = float("inf")
    for _ in range(rounds):
        t0 = time.perf_counter()
        for p in prompts:
            check(p)  # type: ignore[operator]
        best = min(best, time.perf_counter() - t0)
    return best / len(prompts) * 1e6


def main() -> None:
    obf, inn = obfuscations(), innocent()
    everything = [p for _, _, p in obf] + inn
    regex = naive(GUILD_LIST + list(NSFW_TERMS))
    words = WordFilter(GUILD_LIST + list(NSFW_TERMS))

    def by_regex(p: str) -> bool:
        return regex.search(p) is not None

    def by_filter(p: str) -> bool:
        return words.find(p) is not None

    print(f"{'trick':26}{'naive regex':>14}{'WordFilter':>14}")
    totals, caught_r, caught_w = Counter[str](), Counter[str](), Counter[str]()
    for trick, _, prompt in obf:
        totals[trick] += 1
        caught_r[trick] += by_regex(prompt)
        caught_w[trick] += by_filter(prompt)
    for trick, n in totals.items():
        print(f"{trick:26}{f'{caught_r[trick]}/{n}':>14}{f'{caught_w[trick]}/{n}':>14}")
    n_obf = len(obf)
    r_all, w_all = sum(caught_r.values()), sum(caught_w.values())
    print(f"{'obfuscations caught':26}{f'{r_all}/{n_obf}':>14}{f'{w_all}/{n_obf}':>14}"
          f"   ({100 * r_all / n_obf:.1f} % vs {100 * w_all / n_obf:.1f} %)")
    false_r = [p for p in inn if by_regex(p)]
    false_w = [p for p in inn if by_filter(p)]
    print(f"{'innocent refused':26}{f'{len(false_r)}/{len(inn)}':>14}{f'{len(false_w)}/{len(inn)}':>14}")
    for p in false_w:
        print(f"    refused: {p!r} ({words.find(p)})")
    t_regex = per_prompt_us(by_regex, everything)
    t_filter = per_prompt_us(by_filter, everything)
    t_policy = per_prompt_us(as_policy, everything)
    t_rebuilt = per_prompt_us(lambda p: WordFilter(GUILD_LIST).find(p) or is_nsfw_prompt(p), everything, 1)
    print(f"{'µs per prompt (built once)':26}{t_regex:>14.1f}{t_filter:>14.1f}")
    print(f"{'µs per prompt as policy':26}{'':>14}{t_policy:>14.1f}   (guild + NSFW filters)")
    print(f"{'  guild filter rebuilt':26}{'':>14}{t_rebuilt:>14.1f}   (each request, before the cache)")
    print(f"({len(GUILD_LIST)} guild entries + {len(NSFW_TERMS)} NSFW terms, {len(everything)} prompts)")


if __name__ == "__main__":
    main()
