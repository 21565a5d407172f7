"""Banned words: obfuscations are caught, innocent words that merely contain a banned word are not."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from hypothesis import assume, given
from hypothesis import strategies as st

from bench.moderation_corpus import innocent, obfuscations
from bot.policy import is_nsfw_prompt
from generation.moderation import FUNCTION_WORDS, WordFilter, fold, normalise_phrase

BANNED = ["ass", "bad word", "nazi", "sex"]


@pytest.fixture(scope="module")
def words() -> WordFilter:
    return WordFilter(BANNED)


@pytest.mark.parametrize(("text", "hit"), [
    ("ASS", "ass"),
    ("a photo of my Ass", "ass"),
    ("àšş", "ass"),  # accents
    ("\u0430\u0455\u0455", "ass"),  # Cyrillic а and ѕ look like a and s
    ("\u03b1ss", "ass"),  # Greek alpha
    ("ａｓｓ", "ass"),  # fullwidth
    ("𝐬𝐞𝐱", "sex"),  # mathematical bold
    ("a.s.s", "ass"),  # inserted punctuation
    ("a-s-s hat", "ass"),
    ("a s s", "ass"),  # inserted spacing
    ("a . s . s", "ass"),
    ("a s.e.x scene", "sex"),  # a leading article stays a word of its own
    ("a s e x scene", "sex"),
    ("a\u200bs\u200bs", "ass"),  # zero-width spaces
    ("s\u00ade\u00adx", "sex"),  # soft hyphens
    ("a$$", "ass"),  # symbol look-alikes
    ("a55", "ass"),  # digits as letters
    ("s3x", "sex"),
    ("n@zi", "nazi"),
    ("N A Z I party", "nazi"),
    ("ass!", "ass"),
    ("class.ass", "ass"),
    ("the B.A.D w.o.r.d", "bad word"),
    ("bad-word", "bad word"),
    ("Bad   Word", "bad word"),
    ("badword", "bad word"),
])
def test_obfuscations_are_caught(words: WordFilter, text: str, hit: str) -> None:
    assert words.find(text) == hit


@pytest.mark.parametrize("text", [
    "a class act", "assets on the grass", "bass guitar", "Sussex and Essex", "unisex clothes",
    "a.s.s.e.t.s", "a s s e t s", "a hole in the wall", "a bad day", "word of the day", "sextant",
    "1990s poster", "4k wallpaper", "", "   ", "compass, brass and glass",
])
def test_innocent_text_passes(words: WordFilter, text: str) -> None:
    assert words.find(text) is None


def test_phrases_match_only_in_order(words: WordFilter) -> None:
    assert words.find("a word so bad") is None
    assert words.find("very bad word here") == "bad word"


def test_fold_and_normalise() -> None:
    assert fold("Ünïcödé ＴＥＸＴ") == "unicode text"
    assert normalise_phrase("  Bad  Wörd ") == ("bad", "word")
    assert normalise_phrase("a$$") == ("ass",)
    assert not WordFilter(["", "  ", "--"])


@given(st.text(alphabet="bcdfghjklmnpqrtvwxyz ", max_size=40))
def test_text_without_the_letters_never_matches(text: str) -> None:
    # None of these letters (nor their leet forms) spell a banned word, whatever the spacing.
    assert WordFilter(BANNED).find(text) is None


@given(st.sampled_from(BANNED), st.sampled_from([".", "-", " ", "_", "\u200b", " . "]),
       st.booleans())
def test_any_separator_between_letters_is_caught(entry: str, sep: str, upper: bool) -> None:
    letters = entry.replace(" ", "")
    text = sep.join(letters.upper() if upper else letters)
    assert WordFilter(BANNED).find(f"an image of {text} today") == entry


@given(st.sampled_from(BANNED), st.text(alphabet="abcdefghijklmnopqrstuvwxyz", min_size=1, max_size=5))
def test_banned_word_glued_to_other_letters_is_a_different_word(entry: str, glue: str) -> None:
    word = entry.replace(" ", "")
    # A plural ending or the last letter held longer is the same word ("nazis", "asss"): tested below.
    assume(not re.fullmatch(f"{word[-1]}*(e?s)?", glue))
    assert WordFilter([entry]).find(f"{glue}{word}") is None
    assert WordFilter([entry]).find(f"{word}{glue}") is None


# The misses the issue reported: plurals, a letter held longer, words split by a space.
@pytest.mark.parametrize(("text", "hit"), [
    ("nazis marching", "nazi"),
    ("na zi", "nazi"),
    ("asss", "ass"),
    ("a big aaasss", "ass"),
    ("asses", "ass"),
    ("na zis", "nazi"),
    ("sexxx", "sex"),
    ("bad words", "bad word"),
])
def test_plurals_held_letters_and_splits_are_caught(words: WordFilter, text: str, hit: str) -> None:
    assert words.find(text) == hit


@pytest.mark.parametrize("text", ["nak ed woman", "top less", "undressed", "a girl undressing", "nudes",
                                  "t o p l e s s", "nakeddd"])
def test_nsfw_terms_catch_split_and_inflected_words(text: str) -> None:
    assert is_nsfw_prompt(text)


@pytest.mark.parametrize("text", [
    "class", "assassin", "Scunthorpe", "grapes", "analysis", "therapist", "classic bass guitar", "cocktail",
    "Essex", "a pen is on the desk", "an al fresco lunch", "Mary's ex-husband", "a double-breasted suit",
    "a pirate in a cocked hat", "glasses", "a good dog", "garden hoes", "top, less", "bbq ribs on a grill",
    "a rib cage", "a desktop", "bottomland", "a peacock", "Penistone",
])
def test_innocent_words_and_neighbours_pass(text: str) -> None:
    banned = WordFilter(["ass", "nazi", "cunt", "rape", "anal", "cock", "sex", "god", "ho", "penis", "tit"])
    assert banned.find(text) is None
    assert not is_nsfw_prompt(text)


def test_digits_in_a_banned_entry_stay_digits() -> None:
    # "r18" read as leetspeak was "rib": every prompt with ribs was NSFW.
    r18 = WordFilter(["r18"])
    assert r18.find("bbq ribs") is None and r18.find("a rib") is None
    assert r18.find("R18 art") == "r18" and r18.find("r-1-8") == "r18"
    assert normalise_phrase("r18") == ("r18",)


def test_the_bench_corpus_innocent_prompts_pass_and_plain_tricks_are_caught() -> None:
    from bench.moderation_corpus import GUILD_WORDS
    from bot.policy import NSFW_TERMS

    banned = WordFilter([*GUILD_WORDS, *NSFW_TERMS])
    refused = {p.split(",")[0] for p in innocent() if banned.find(p) is not None}
    # Known: a hyphen separates words, so the brand Gore-Tex holds the word "gore" (see README).
    assert refused == {"a hiker in a Gore-Tex jacket"}
    always = {"dotted", "spaced letters", "hyphens", "symbols for letters", "accents", "cyrillic look-alikes",
              "fullwidth", "zero-width spaces", "plural", "last letter held", "mixed case"}
    missed = [p for trick, _, p in obfuscations() if trick in always and banned.find(p) is None]
    assert missed == []


@given(st.sampled_from(["ass", "nazi", "sex", "naked", "topless"]), st.booleans(), st.integers(0, 3))
def test_plurals_and_held_last_letters_are_caught(entry: str, plural: bool, extra: int) -> None:
    text = entry + entry[-1] * extra
    if plural:
        text += "es" if text.endswith(("s", "x")) else "s"
    assert WordFilter([entry]).find(f"a poster of {text}, oil painting") == entry


@given(st.sampled_from(["nazi", "naked", "topless", "hentai", "lingerie", "swastika"]), st.data())
def test_a_word_split_by_spaces_into_pieces_is_caught(entry: str, data: st.DataObject) -> None:
    cut = data.draw(st.integers(2, len(entry) - 2))
    assume(entry[:cut] not in FUNCTION_WORDS and entry[cut:] not in FUNCTION_WORDS)  # "to pless" stays apart
    spaces = data.draw(st.sampled_from([" ", "  ", "\t"]))
    assert WordFilter([entry]).find(f"a photo, {entry[:cut]}{spaces}{entry[cut:]} on a beach") == entry


# Innocent words that hold banned ones, and short function words that could glue onto neighbours.
_INNOCENT_VOCAB = ["class", "assassin", "scunthorpe", "grapes", "analysis", "therapist", "classic", "bass",
                   "guitar", "cocktail", "essex", "sussex", "compass", "glass", "cucumber", "document",
                   "title", "peacock", "cassette", "canal", "sextant", "unisex", "the", "a", "of", "pen",
                   "is", "an", "al", "or", "go", "as", "at", "red", "lake", "top", "photo", "less", "fresco",
                   "in"]
_SEPARATORS = [" ", ", ", " - ", ". "]


@given(st.lists(st.tuples(st.sampled_from(_INNOCENT_VOCAB), st.sampled_from(_SEPARATORS)), max_size=12))
def test_innocent_vocabulary_in_any_order_never_matches(parts: list[tuple[str, str]]) -> None:
    text = "".join(word + sep for word, sep in parts)
    banned = WordFilter(["ass", "nazi", "cunt", "rape", "anal", "cock", "sex", "tit", "cum", "penis",
                         "orgasm"])
    assert banned.find(text) is None


def test_skin_tone_checker_flags_skin_and_passes_sky() -> None:
    from PIL import Image

    from generation.safety import SkinToneChecker, checker_for

    skin = Image.new("RGB", (64, 64), (224, 172, 140))
    sky = Image.new("RGB", (64, 64), (90, 140, 230))
    half = Image.new("RGB", (64, 64), (90, 140, 230))
    half.paste(skin.crop((0, 0, 64, 40)), (0, 0))  # 62.5 % skin
    checker = SkinToneChecker(threshold=0.5)
    assert checker.check([skin, sky, half]) == [True, False, True]
    assert SkinToneChecker(threshold=0.7).check([half]) == [False]
    assert isinstance(checker_for(object(), tiny=True), SkinToneChecker)
    assert checker_for(object(), tiny=False) is None


def test_a_real_diffusers_safety_checker_is_detached_and_used(tmp_path: Path) -> None:
    """A tiny but real StableDiffusionSafetyChecker, with one concept set to a reference image's
    embedding: an image like the reference is flagged, noise is not; the pipeline no longer runs it."""
    import numpy as np
    import torch
    from PIL import Image

    from generation.safety import DiffusersSafetyChecker, detach_checker, load_standalone_checker
    from generation.tiny import write_tiny_safety_checker

    loaded = load_standalone_checker(str(write_tiny_safety_checker(tmp_path / "checker", threshold=2.0)))
    module, extractor = loaded.safety_checker, loaded.feature_extractor
    reference = Image.new("RGB", (64, 64), (224, 172, 140))
    noise = Image.fromarray(np.random.default_rng(0).integers(0, 255, (64, 64, 3), dtype=np.uint8))
    with torch.no_grad():
        pooled = module.vision_model(extractor([reference], return_tensors="pt").pixel_values)[1]
        embed = module.visual_projection(pooled)[0]
        module.concept_embeds[0] = embed
        module.concept_embeds_weights[0] = 0.999  # threshold 2 elsewhere: no other concept can fire

    class Pipe:  # the two attributes a diffusers SD pipeline carries
        safety_checker = module
        feature_extractor = extractor

    pipe = Pipe()
    checker = detach_checker(pipe, tiny=False)
    assert isinstance(checker, DiffusersSafetyChecker) and pipe.safety_checker is None
    assert checker.check([reference, noise, reference]) == [True, False, True]
    assert checker.check([]) == []
