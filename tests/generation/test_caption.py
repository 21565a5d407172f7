"""/describe's core with the tiny offline captioners (random BLIP and Florence-2 built by generation/tiny.py,
loaded through AutoProcessor / AutoModelForImageTextToText like real ones): four different prompts, the
same ones for the same image, the image's own aspect and light."""

from __future__ import annotations

from pathlib import Path

import pytest
from PIL import Image

from generation.caption import MEDIUMS, Captioner, looks_of, nearest_aspect


@pytest.mark.parametrize("source", ["tiny", "tiny-florence"])
def test_a_tiny_captioner_gives_four_different_prompts_the_same_for_the_same_image(
        source: str, tiny_data_dir: Path) -> None:
    captioner = Captioner(source, tiny_data_dir, device="cpu")
    image = Image.new("RGB", (320, 180), (240, 230, 200))
    prompts = captioner.describe(image)
    assert len(prompts) == 4 and len(set(prompts)) == 4
    for prompt, medium in zip(prompts, MEDIUMS, strict=True):
        caption, _, rest = prompt.partition(f", {medium}, ")
        assert caption.strip() and "--" not in caption  # the model's own text, never a flag
        assert rest == "bright airy light, yellow tones --ar 16:9"
    assert captioner.describe(image.copy()) == prompts
    if source == "tiny-florence":  # asked for its detailed-caption task, as the real model needs
        asked = captioner._processor.tokenizer.decode(captioner._inputs(image)["input_ids"][0])
        assert "Describe with a paragraph what is shown in the image." in asked
    assert type(captioner._model).__name__ == {"tiny": "BlipForConditionalGeneration",
                                                "tiny-florence": "Florence2ForConditionalGeneration"}[source]


def test_aspect_and_looks_come_from_the_pixels() -> None:
    assert [nearest_aspect(s) for s in [(1920, 1080), (64, 128), (1000, 990), (1200, 800)]] == [
        "16:9", "9:16", "1:1", "3:2"]
    assert looks_of(Image.new("RGB", (8, 8), (10, 10, 40))) == ["low-key lighting", "blue tones"]
    assert looks_of(Image.new("RGB", (8, 8), (128, 128, 128))) == ["soft natural light", "muted tones"]
    assert looks_of(Image.new("RGB", (8, 8), (30, 200, 60))) == ["soft natural light", "vivid green palette"]
