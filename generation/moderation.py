"""Banned-word matching that spacing, accents, look-alike letters and inserted punctuation do not slip
past, while innocent words that merely contain a banned word ("class" for "ass") still pass.

The text is normalised (NFKC, invisible characters dropped, casefold, accents stripped, look-alikes and
leetspeak folded to ASCII letters) and split into words in a few ways ("views"). A banned word or
phrase matches when its words appear as whole, consecutive words in any view:

- plain: every non-alphanumeric character separates words ("bad-word" -> bad, word);
- joined: letters split by punctuation without spaces, or single letters split by spaces, are put back
  together ("b.a.d", "b a d", "b-a d" -> bad), so the obfuscated word is one word again (also with a
  leading article kept apart, "a h o u s e" -> a, house; and with spaces never joining);
- each of those with symbol look-alikes ($ @ ! |) read as letters ("a$$" -> ass), and without
  (so "ass!" still ends at the s).

Matching whole words in every view keeps the word-boundary rule: "class", "assets" and "a.s.s.e.t.s"
do not contain the word "ass" in any view.

Each word is also read as the banned word it stretches or inflects (`WordFilter.base`):
- a plural: "nazis" -> nazi, "asses" -> ass ("es" only after s, x, z, ch, sh: "hoes" is not "ho"+es);
- a letter held longer: "asss", "sexxx", "nnnaked" -> the banned word, when the longer run is the last
  one or at least three letters long ("good" is not a stretched "god": English doubles letters, it
  rarely triples them).
- two or three neighbours split by spaces alone: "na zi", "nak ed", "top less" -> nazi, naked, topless,
  when every piece has two letters or more and none is a function word ("a pen is here" is not "penis";
  "Mary's ex" is not "sex"; "top, less" has a comma).
Verb endings are not stripped ("ed", "ing"): "double-breasted" and "a cocked hat" are innocent, so a
list wanting "undressed" names it.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Iterable
from dataclasses import dataclass
from functools import lru_cache

__all__ = ["FUNCTION_WORDS", "WordFilter", "Words", "fold", "normalise_phrase", "views"]

# Letters from other scripts that render like Latin ones (after casefolding), plus a few symbols that
# NFKC keeps. Unicode's confusables list is far larger; these are the ones people actually type.
_CONFUSABLES: dict[str, str] = {
    # Cyrillic
    "а": "a", "в": "b", "г": "r", "д": "d", "е": "e", "ё": "e", "з": "3", "и": "n", "й": "n",
    "к": "k", "л": "n", "м": "m", "н": "h", "о": "o", "п": "n", "р": "p", "с": "c", "т": "t",
    "у": "y", "ф": "f", "х": "x", "ц": "u", "ч": "4", "ш": "w", "щ": "w", "ь": "b", "ы": "bl",
    "і": "i", "ї": "i", "ј": "j", "ѕ": "s", "ԁ": "d", "ԛ": "q", "ԝ": "w", "һ": "h", "ӏ": "l",
    "ɡ": "g", "ɑ": "a", "ʀ": "r", "ᴀ": "a", "ʙ": "b", "ᴄ": "c", "ᴅ": "d", "ᴇ": "e", "ɢ": "g",
    "ʜ": "h", "ɪ": "i", "ᴊ": "j", "ᴋ": "k", "ʟ": "l", "ᴍ": "m", "ɴ": "n", "ᴏ": "o", "ᴘ": "p",
    "ꞯ": "q", "ᴛ": "t", "ᴜ": "u", "ᴠ": "v", "ᴡ": "w", "ʏ": "y", "ᴢ": "z", "ꜱ": "s",
    # Greek
    "α": "a", "β": "b", "γ": "y", "δ": "d", "ε": "e", "ζ": "z", "η": "n", "θ": "o", "ι": "i",
    "κ": "k", "λ": "l", "μ": "u", "ν": "v", "ξ": "e", "ο": "o", "π": "n", "ρ": "p", "σ": "o",
    "ς": "c", "τ": "t", "υ": "u", "φ": "f", "χ": "x", "ψ": "w", "ω": "w",
    # Latin extras that survive accent stripping
    "ø": "o", "đ": "d", "ł": "l", "ħ": "h", "ı": "i", "ȷ": "j", "ŧ": "t", "ƀ": "b", "ɨ": "i",
    "ß": "ss", "æ": "ae", "œ": "oe", "þ": "th",
}
# Digits read as letters only inside a word that has letters ("a55" -> ass; "1990" stays a number).
_LEET_DIGITS = str.maketrans({"0": "o", "1": "i", "3": "e", "4": "a", "5": "s", "6": "g", "7": "t",
                              "8": "b", "9": "g"})
# Symbols read as letters in the "symbols as letters" views only.
_LEET_SYMBOLS: dict[str, str] = {"$": "s", "@": "a", "!": "i", "|": "l", "€": "e", "£": "l", "¢": "c",
                                 "+": "t"}

_TOKEN = re.compile(r"[^\W_]+", re.UNICODE)


@lru_cache(maxsize=1)
def _confusable_table() -> dict[int, str]:
    return {ord(k): v for k, v in _CONFUSABLES.items()}


def fold(text: str) -> str:
    """Normalise `text` for matching: compatibility forms, no invisible characters, no case, no accents,
    look-alike letters as their Latin twins. Separators and symbols are kept for tokenising."""
    text = unicodedata.normalize("NFKC", text)
    # Zero-width spaces, joiners, soft hyphens, bidi marks: invisible, so they must not split a word.
    text = "".join(ch for ch in text if unicodedata.category(ch) != "Cf")
    text = text.casefold()
    text = unicodedata.normalize("NFD", text)
    text = "".join(ch for ch in text if not unicodedata.combining(ch))
    text = unicodedata.normalize("NFC", text)
    return text.translate(_confusable_table())


@dataclass(frozen=True)
class _Token:
    text: str
    start: int
    end: int


def _tokens(text: str) -> list[_Token]:
    return [_Token(m.group(), m.start(), m.end()) for m in _TOKEN.finditer(text)]


def _deleet(word: str) -> str:
    if word.isalpha():  # the common case, and no digits to read
        return word
    return word.translate(_LEET_DIGITS) if any(ch.isalpha() for ch in word) else word


def _joined(text: str, tokens: list[_Token], *, spaced: bool = True, articles: bool = False) -> list[str]:
    """Put words split by inserted punctuation (and, if `spaced`, spacing) back together.

    `articles` keeps a leading "a" or "i" apart from a spaced-out word after it ("a h o u s e" is
    "a house", not "ahouse"); the view without it still reads "a s s" as one word."""
    words: list[str] = []
    current = ""
    for i, token in enumerate(tokens):
        join = False
        if i:
            left = tokens[i - 1].text
            gap = text[tokens[i - 1].end:token.start]
            join = _joins(gap, left, token.text, spaced)
            if join and articles and current == left and left in ("a", "i") and any(c.isspace() for c in gap):
                join = False
        if join:
            current += token.text
        else:
            if current:
                words.append(current)
            current = token.text
    if current:
        words.append(current)
    return words


def _joins(gap: str, left: str, right: str, spaced: bool) -> bool:
    if any(ch.isspace() for ch in gap):  # "b a d" and "b . a . d" join; "a hole" and "cat, dog" do not
        return spaced and len(left) == 1 and len(right) == 1
    return len(gap) <= 3  # "b.a.d", "b--a--d", "rock'n'roll"


def _variants(text: str) -> list[tuple[str, list[_Token]]]:
    """The folded text, and (if it differs) the same with symbol look-alikes read as letters, tokenised."""
    folded = fold(text)
    with_symbols = "".join(_LEET_SYMBOLS.get(ch, ch) for ch in folded)
    return [(v, _tokens(v)) for v in ((folded, with_symbols) if with_symbols != folded else (folded,))]


def views(text: str) -> list[list[str]]:
    """The word sequences a banned word is looked for in (see the module docstring)."""
    return _views(_variants(text))


def _views(variants: list[tuple[str, list[_Token]]]) -> list[list[str]]:
    out: list[list[str]] = []
    for variant, tokens in variants:
        plain = [t.text for t in tokens]
        joined = [_joined(variant, tokens), _joined(variant, tokens, articles=True),
                  _joined(variant, tokens, spaced=False)]
        for words in (plain, *joined):
            read = [_deleet(w) for w in words]
            out.append(read)
            if read != words:
                out.append(words)  # "4k" is also just "4k"
    return out


# Function words: never a piece of a word split by spaces ("pen is", "an al", "or gasm" stay apart).
FUNCTION_WORDS = frozenset(
    "a an the is are was were be been am of in on at to by as or and if so no not nor for with from into "
    "onto off up out over it its he she we me my us our you your his her him they them their this that "
    "these those all any but do does did has had have go goes can will my oh".split()
)


def _split_joins(variants: list[tuple[str, list[_Token]]]) -> set[str]:
    """Two or three neighbouring words separated by spaces only, put together ("na zi" -> nazi)."""
    out: set[str] = set()
    for variant, tokens in variants:
        pieces = [_deleet(t.text) for t in tokens]
        usable = [len(p) >= 2 and p.isalpha() and p not in FUNCTION_WORDS for p in pieces]
        for i in range(len(tokens) - 1):
            joined = pieces[i]
            for j in range(i + 1, min(i + 3, len(tokens))):
                gap = variant[tokens[j - 1].end:tokens[j].start]
                if not (usable[j - 1] and usable[j] and gap.isspace()):
                    break
                joined += pieces[j]
                out.add(joined)
    return out


def _runs(word: str) -> list[tuple[str, int]]:
    """"nazzi" -> [(n, 1), (a, 1), (z, 2), (i, 1)]."""
    runs: list[tuple[str, int]] = []
    for ch in word:
        if runs and runs[-1][0] == ch:
            runs[-1] = (ch, runs[-1][1] + 1)
        else:
            runs.append((ch, 1))
    return runs


def _skeleton(word: str) -> str:
    return "".join(ch for ch, _ in _runs(word))


def _stretches(word: str, banned: str) -> bool:
    """`word` is `banned` with letters held longer: only the last run, or any run to three or more."""
    have, want = _runs(word), _runs(banned)
    if [c for c, _ in have] != [c for c, _ in want]:
        return False
    last = len(have) - 1
    return all(n == m or (n > m and (i == last or n >= 3))
               for i, ((_, n), (_, m)) in enumerate(zip(have, want, strict=True)))


def _singulars(word: str) -> list[str]:
    """The word itself and what it is the plural of, if it looks like one."""
    out = [word]
    if word.endswith("es") and word[:-2].endswith(("s", "x", "z", "ch", "sh")):
        out.append(word[:-2])
    if word.endswith("s") and not word.endswith("ss") and len(word) > 3:
        out.append(word[:-1])
    return out


def normalise_phrase(phrase: str) -> tuple[str, ...]:
    """A banned word or phrase as the words it must match ("Bad  Wörd" -> ("bad", "word")).

    Symbols read as letters ("a$$" -> ass) but digits stay digits: a moderator's "r18" means r18 (read
    as leetspeak it would be "rib"). A prompt's leetspeak is read in its own view, so "s3x" still hits
    "sex"."""
    folded = "".join(_LEET_SYMBOLS.get(ch, ch) for ch in fold(phrase))
    return tuple(t.text for t in _tokens(folded))


@dataclass(frozen=True)
class Words:
    """One banned entry as the moderator typed it, and the words it matches."""

    entry: str
    words: tuple[str, ...]


# Bound on the per-filter memo of word -> base (the NSFW filter lives as long as the bot).
_MEMO_MAX = 50_000


class WordFilter:
    """Banned words and phrases of one guild. `find(text)` returns the first entry `text` hits."""

    def __init__(self, entries: Iterable[str]) -> None:
        self.entries = [Words(e, normalise_phrase(e)) for e in entries]
        self.entries = [e for e in self.entries if e.words]
        self._longest = max((len(e.words) for e in self.entries), default=0)
        # Every word a banned entry is made of, and each phrase written as one word ("badword").
        vocabulary = {w for e in self.entries for w in e.words} | {"".join(e.words) for e in self.entries}
        self._by_skeleton: dict[str, list[str]] = {}
        for word in sorted(vocabulary):
            self._by_skeleton.setdefault(_skeleton(word), []).append(word)
        self._memo: dict[str, str] = {}
        # Each entry by the word sequence it matches, and by its words written as one: a prompt's
        # words are looked up here, instead of every entry being tried against every prompt.
        self._by_words: dict[tuple[str, ...], int] = {}
        self._by_joined: dict[str, int] = {}
        for index, entry in reversed(list(enumerate(self.entries))):  # the first listed entry wins
            self._by_words[entry.words] = index
            self._by_joined["".join(entry.words)] = index

    @staticmethod
    @lru_cache(maxsize=256)
    def _shared(entries: tuple[str, ...]) -> WordFilter:
        return WordFilter(entries)

    @classmethod
    def cached(cls, entries: Iterable[str]) -> WordFilter:
        """The filter for this list, built once: folding 300 entries costs ~5 ms, more than matching,
        and a guild's list changes far less often than prompts arrive."""
        return cls._shared(tuple(entries))

    def __bool__(self) -> bool:
        return bool(self.entries)

    def base(self, word: str) -> str:
        """The banned word `word` is a plural or a stretched spelling of ("nazis", "asss"), else `word`."""
        found = self._memo.get(word)
        if found is None:
            found = word
            for singular in _singulars(word):
                match = next((b for b in self._by_skeleton.get(_skeleton(singular), ())
                              if _stretches(singular, b)), None)
                if match is not None:
                    found = match
                    break
            if len(self._memo) >= _MEMO_MAX:
                self._memo.clear()
            self._memo[word] = found
        return found

    def find(self, text: str) -> str | None:
        if not self.entries or not text:
            return None
        grams: set[tuple[str, ...]] = set()
        singles: set[str] = set()
        variants = _variants(text)
        for words in _views(variants):
            words = [self.base(w) for w in words]
            singles.update(words)
            for n in range(1, self._longest + 1):
                grams.update(tuple(words[i:i + n]) for i in range(len(words) - n + 1))
        singles.update(self.base(w) for w in _split_joins(variants))
        # A phrase also matches written as one word ("badword" for "bad word").
        hits = [self._by_words[g] for g in grams if g in self._by_words]
        hits += [self._by_joined[w] for w in singles if w in self._by_joined]
        return self.entries[min(hits)].entry if hits else None
