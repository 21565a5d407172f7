"""The word-matcher corpus: obfuscated prompts a filter should refuse and innocent image prompts it
should let through, built from word lists and templates (deterministic: the same lists every run).

Obfuscations are grouped by the trick used, so a report can say which tricks get through. Some tricks
are here although the matcher misses them on purpose (a doubled inner letter, a censoring asterisk, a
split that leaves one letter alone): the catch rate must not only count what was designed to pass.
Innocent prompts are realistic image prompts, many holding a banned word inside an innocent one
("classic bass guitar", "grapes", "therapist office", "Scunthorpe", "cocktail", "Essex", "analysis").
"""

from __future__ import annotations

import random

# What a moderator bans on top of the bot's own NSFW terms (bot.policy.NSFW_TERMS).
GUILD_WORDS = ["ass", "nazi", "hitler", "swastika", "cunt", "rape", "anal", "cock", "tit", "cum", "gore",
               "bad word", "dead body"]

# Banned words the obfuscations are made from (single words, four letters or more for the splits).
TARGETS = ["nazi", "naked", "topless", "nude", "porn", "hentai", "erotic", "boobs", "nipples", "lingerie",
           "fetish", "hitler", "swastika", "sexy", "explicit", "vagina", "penis", "orgasm", "undressed",
           "rape", "cock", "cunt", "anal", "gore"]
SHORT_TARGETS = ["ass", "sex", "tit", "cum", "xxx"]

_CYRILLIC = {"a": "\u0430", "e": "\u0435", "o": "\u043e", "p": "\u0440", "c": "\u0441", "x": "\u0445",
             "y": "\u0443", "i": "\u0456", "s": "\u0455"}
_ACCENTS = {"a": "à", "e": "é", "i": "í", "o": "ö", "u": "ü", "n": "ñ", "c": "ç", "s": "š"}
_LEET = {"a": "4", "e": "3", "i": "1", "o": "0", "s": "5", "t": "7"}
_SYMBOLS = {"a": "@", "s": "$", "i": "!"}


def _map(word: str, table: dict[str, str]) -> str:
    return "".join(table.get(ch, ch) for ch in word)


def _split(word: str, rng: random.Random) -> str:
    cut = rng.randint(2, len(word) - 2)
    return f"{word[:cut]} {word[cut:]}"


def _plural(word: str) -> str:
    return word + ("es" if word.endswith(("s", "x")) else "s")


# Trick name -> how it rewrites a banned word.
TRICKS = {
    "dotted": lambda w, r: ".".join(w),
    "spaced letters": lambda w, r: " ".join(w),
    "hyphens": lambda w, r: "-".join(w.upper()),
    "digits for letters": lambda w, r: _map(w, _LEET),
    "symbols for letters": lambda w, r: _map(w, _SYMBOLS),
    "accents": lambda w, r: _map(w, _ACCENTS),
    "cyrillic look-alikes": lambda w, r: _map(w, _CYRILLIC),
    "fullwidth": lambda w, r: "".join(chr(ord(c) + 0xFEE0) for c in w),
    "zero-width spaces": lambda w, r: "\u200b".join(w),
    "plural": lambda w, r: _plural(w),
    "last letter held": lambda w, r: w + w[-1] * 2,
    "split in two": lambda w, r: _split(w, r),
    "split + plural": lambda w, r: _split(_plural(w), r),
    "mixed case": lambda w, r: "".join(c.upper() if i % 2 else c for i, c in enumerate(w)),
    # Missed on purpose (see generation/moderation.py): each would refuse innocent words too.
    "inner letter doubled": lambda w, r: w[:2] + w[1] + w[2:],
    "asterisk for a letter": lambda w, r: w[0] + "*" + w[2:],
    "one letter split off": lambda w, r: f"{w[:-1]} {w[-1]}",
}
# Tricks that only make sense for words long enough to split into pieces of two letters or more.
_LONG_ONLY = {"split in two", "split + plural", "inner letter doubled"}

SUBJECT_FILLER = ["a portrait of a woman", "a man on a beach", "a statue in a museum", "an anime girl",
                  "a couple in a bedroom", "a poster", "a dancer", "a figure in the rain"]
STYLE_FILLER = ["oil painting", "35mm photo", "digital art", "highly detailed", "cinematic lighting",
                "watercolor", "8k", "trending on artstation"]


def obfuscations() -> list[tuple[str, str, str]]:
    """(trick, banned word, prompt) for every trick on every target it applies to."""
    rng = random.Random(7)
    out: list[tuple[str, str, str]] = []
    for trick, rewrite in TRICKS.items():
        words = TARGETS if trick in _LONG_ONLY else TARGETS + SHORT_TARGETS
        for word in words:
            if trick == "split in two" and len(word) < 4:
                continue
            hidden = rewrite(word, rng)
            out.append((trick, word,
                        f"{rng.choice(SUBJECT_FILLER)}, {hidden}, {rng.choice(STYLE_FILLER)}"))
    return out


# Innocent subjects: most hold a banned word inside a longer innocent word, or next to one.
TRICKY_SUBJECTS = [
    "a classic bass guitar on a stage", "a bowl of grapes on a table",
    "a therapist office with a green couch",
    "the Scunthorpe steelworks at night", "a cocktail bar in Havana", "a thatched cottage in Essex",
    "a data analysis dashboard", "an assassin in a hooded cloak", "a class of students in a lab",
    "a brass sextant on a map table", "a titan rising from the sea", "a vintage book title page",
    "sliced cucumber salad", "an old legal document with a wax seal", "cumulus clouds over a wheat field",
    "a peacock spreading its tail", "a cocker spaniel puppy", "a shuttlecock on a badminton court",
    "a weathercock on a church roof", "the Sussex downs in spring", "a unisex clothing boutique",
    "a brass compass on a glass table", "massive granite mountains", "a passionate tango dancer",
    "an embassy building with flags", "a bassoon player in an orchestra", "a cassette tape collection",
    "the Manassas battlefield at dawn", "a grassy hill with sheep", "a fountain pen is resting on old paper",
    "a double-breasted wool suit", "a red-breasted robin on a branch", "a pirate in a cocked tricorn hat",
    "a hen and her chicks", "a rapeseed field in bloom", "canal boats in Amsterdam",
    "an analog synthesizer with patch cables", "a titmouse on a snowy branch", "a cross-stitch sampler",
    "the Hancock tower in Boston", "a Dickens-era London street", "a nudibranch on a coral reef",
    "a sexton in an old graveyard", "a map of Middlesex county", "a street in Penistone village",
    "barbecue ribs on a grill", "a drape of red velvet", "a skyscraper at night", "a pianist at a concert",
    "a gorgeous sunset over a gorge", "a toppled lighthouse", "a bottomland forest in autumn",
    "a pen and inkwell", "a nautical chart with a compass rose", "the Arsenal stadium at night",
    "a hiker in a Gore-Tex jacket", "a scrapbook of pressed flowers", "a Matisse-style cutout",
    "a classroom globe", "Hitchcock-style suspense scene", "a shiitake mushroom still life",
]
PLAIN_SUBJECTS = [
    "a lighthouse on a cliff", "a red fox in the snow", "a cyberpunk city street", "a cat astronaut",
    "a medieval castle", "a bowl of ramen", "a steam locomotive", "a koi pond", "a dragon over mountains",
    "an old fisherman", "a cozy reading nook", "a desert caravan", "a robot gardener", "a jazz trio",
    "a mountain top at sunrise", "less is more minimalist poster", "a treehouse in a redwood forest",
]
SETTINGS = ["at golden hour", "in the rain", "under neon lights", "in winter", "at dawn",
            "on a foggy morning", "seen from above", "in a studio"]
STYLES = ["oil painting", "watercolor", "35mm photo", "digital art", "studio ghibli style",
          "isometric 3d render", "charcoal sketch", "ukiyo-e woodblock print", "cinematic lighting, 8k",
          "highly detailed, trending on artstation", "bokeh, shallow depth of field", "pixel art"]


def innocent(per_subject: int = 7) -> list[str]:
    """Realistic prompts: each subject in `per_subject` different settings and styles."""
    rng = random.Random(11)
    out: list[str] = []
    for subject in TRICKY_SUBJECTS + PLAIN_SUBJECTS:
        combos = rng.sample([(s, t) for s in SETTINGS for t in STYLES], per_subject)
        out.extend(f"{subject}, {setting}, {style}" for setting, style in combos)
    return out
