"""Banned words: obfuscations are caught, innocent words that merely contain a banned word are not."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from generation.moderation import WordFilter, fold, normalise_phrase

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
    assert WordFilter([entry]).find(f"{glue}{word}") is None
    assert WordFilter([entry]).find(f"{word}{glue}") is None


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


def test_a_real_diffusers_safety_checker_is_detached_and_used() -> None:
    """A tiny but real StableDiffusionSafetyChecker, with one concept set to a reference image's
    embedding: an image like the reference is flagged, noise is not; the pipeline no longer runs it."""
    import numpy as np
    import torch
    from diffusers.pipelines.stable_diffusion.safety_checker import StableDiffusionSafetyChecker
    from PIL import Image
    from transformers import CLIPConfig, CLIPImageProcessor

    from generation.safety import DiffusersSafetyChecker, detach_checker

    torch.manual_seed(0)
    config = CLIPConfig(
        text_config={"hidden_size": 32, "num_hidden_layers": 2, "num_attention_heads": 4,
                     "intermediate_size": 37, "vocab_size": 100},
        vision_config={"hidden_size": 32, "image_size": 32, "patch_size": 4, "num_hidden_layers": 2,
                       "num_attention_heads": 4, "intermediate_size": 37},
        projection_dim=32,
    )
    module = StableDiffusionSafetyChecker(config).eval()
    extractor = CLIPImageProcessor(size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32})
    reference = Image.new("RGB", (64, 64), (224, 172, 140))
    noise = Image.fromarray(np.random.default_rng(0).integers(0, 255, (64, 64, 3), dtype=np.uint8))
    with torch.no_grad():
        pooled = module.vision_model(extractor([reference], return_tensors="pt").pixel_values)[1]
        embed = module.visual_projection(pooled)[0]
        module.concept_embeds[0] = embed
        module.concept_embeds_weights.fill_(2.0)  # no concept but the first can fire
        module.concept_embeds_weights[0] = 0.999
        module.special_care_embeds_weights.fill_(2.0)

    class Pipe:  # the two attributes a diffusers SD pipeline carries
        safety_checker = module
        feature_extractor = extractor

    pipe = Pipe()
    checker = detach_checker(pipe, tiny=False)
    assert isinstance(checker, DiffusersSafetyChecker) and pipe.safety_checker is None
    assert checker.check([reference, noise, reference]) == [True, False, True]
    assert checker.check([]) == []
