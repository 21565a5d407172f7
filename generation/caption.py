"""/describe's core: four prompt suggestions for an image from a captioning model (ATELIER_CAPTION_MODEL).

The model is any image-to-text model transformers opens with AutoProcessor and
AutoModelForImageTextToText: BLIP (`Salesforce/blip-image-captioning-large`) or Florence-2
(`florence-community/Florence-2-base`, asked for its `<MORE_DETAILED_CAPTION>` task), a hub id or a local
folder; `tiny` / `tiny-florence` build a tiny random BLIP / Florence-2 offline (generation/tiny.py),
whose captions are nonsense.

Four suggestions, always different: the captioner's best beams (then seeded samples when the beams
repeat themselves), each phrased in another medium, with the light and colour measured from the image
and the image's own aspect as `--ar`. Everything here blocks (torch): callers run it in a thread. The
captioner has its own model and lock, apart from the render pipelines, so describing never waits for a
render (nor a render for it).
"""

from __future__ import annotations

import colorsys
import hashlib
import logging
import re
import threading
from pathlib import Path
from typing import Any

from PIL import Image, ImageStat

from generation.validate import ASPECTS

log = logging.getLogger(__name__)

SUGGESTIONS = 4
MAX_CAPTION_CHARS = 200
MAX_NEW_TOKENS = 30
# One medium per suggestion, so the four differ even when the model repeats one caption.
MEDIUMS = ("photograph", "digital painting", "cinematic film still", "watercolor illustration")
FLORENCE_TASK = "<MORE_DETAILED_CAPTION>"
_SPACES = re.compile(r"\s+")
_HUES = ((15, "red"), (45, "orange"), (70, "yellow"), (160, "green"), (200, "teal"), (255, "blue"),
         (290, "purple"), (335, "magenta"), (360, "red"))


class Captioner:
    """One captioning model, loaded on first use. `source`: hub id, folder, or `tiny`."""

    def __init__(self, source: str, data_dir: Path, device: str = "cpu") -> None:
        self.source = source
        self.data_dir = Path(data_dir)
        self.device = device
        self._lock = threading.Lock()  # a transformers model is not thread-safe; loading happens once
        self._model: Any = None
        self._processor: Any = None

    def _load(self) -> None:
        import torch
        from transformers import AutoModelForImageTextToText, AutoProcessor

        folder: str = self.source
        from generation.tiny import TINY_CAPTIONERS, ensure_tiny_captioner

        if self.source in TINY_CAPTIONERS:
            folder = str(ensure_tiny_captioner(self.data_dir, self.source))
        local = Path(folder).is_dir()
        if self.device == "auto":
            self.device = "cuda" if torch.cuda.is_available() else "cpu"
        dtype = torch.float16 if self.device == "cuda" else torch.float32
        self._processor = AutoProcessor.from_pretrained(folder, local_files_only=local)
        model = AutoModelForImageTextToText.from_pretrained(folder, local_files_only=local, dtype=dtype)
        self._model = model.to(self.device).eval()  # type: ignore[arg-type]  # transformers stubs
        log.info("captioner %s loaded (%s)", self.source, type(model).__name__)

    def _inputs(self, image: Image.Image) -> Any:
        florence = getattr(self._model.config, "model_type", "") == "florence2"
        kwargs: dict[str, Any] = {"text": FLORENCE_TASK} if florence else {}
        inputs = self._processor(images=image, return_tensors="pt", **kwargs).to(self.device)
        if "pixel_values" in inputs:
            inputs["pixel_values"] = inputs["pixel_values"].to(self._model.dtype)
        return inputs

    def captions(self, image: Image.Image, seed: int) -> list[str]:
        """Up to SUGGESTIONS distinct captions: beam search first, seeded sampling to fill. Blocking."""
        import torch

        with self._lock:
            if self._model is None:
                self._load()
            inputs = self._inputs(image)
            found: list[str] = []
            with torch.inference_mode():
                beams = self._model.generate(**inputs, num_beams=SUGGESTIONS,
                                             num_return_sequences=SUGGESTIONS, max_new_tokens=MAX_NEW_TOKENS)
                _add(found, self._processor.batch_decode(beams, skip_special_tokens=True))
                if len(found) < SUGGESTIONS:
                    # The same image gets the same suggestions; the global RNG of other threads is untouched.
                    with torch.random.fork_rng(devices=[]):
                        torch.manual_seed(seed)
                        sampled = self._model.generate(**inputs, do_sample=True, top_p=0.9,
                                                       num_return_sequences=SUGGESTIONS * 2,
                                                       max_new_tokens=MAX_NEW_TOKENS)
                    _add(found, self._processor.batch_decode(sampled, skip_special_tokens=True))
        return found[:SUGGESTIONS]

    def describe(self, image: Image.Image) -> list[str]:
        """SUGGESTIONS different prompts for `image` (RGB). Blocking: run it in a thread."""
        seed = int.from_bytes(hashlib.sha256(image.tobytes()).digest()[:4], "big")
        found = self.captions(image, seed) or ["an image"]
        look = ", ".join(looks_of(image))
        aspect = nearest_aspect(image.size)
        return [f"{found[i % len(found)]}, {medium}, {look} --ar {aspect}"
                for i, medium in enumerate(MEDIUMS)]


def _add(found: list[str], texts: list[str]) -> None:
    seen = {f.lower() for f in found}
    for text in texts:
        clean = _SPACES.sub(" ", text).strip(" ,.")[:MAX_CAPTION_CHARS].strip()
        # "--" would read as a flag in the prompt.
        clean = clean.replace("--", "-")
        if clean and clean.lower() not in seen:
            seen.add(clean.lower())
            found.append(clean)


def nearest_aspect(size: tuple[int, int]) -> str:
    """The /imagine aspect closest to `size` (on a log scale, so 2:1 is as far from 1:1 as 1:2)."""
    import math

    ratio = math.log(size[0] / size[1])

    def distance(aspect: str) -> float:
        w, h = (int(x) for x in aspect.split(":"))
        return abs(math.log(w / h) - ratio)

    return min(ASPECTS, key=distance)


def looks_of(image: Image.Image) -> list[str]:
    """Light and colour words measured from the pixels: brightness, saturation and the main hue."""
    small = image.convert("RGB").resize((32, 32))
    r, g, b = (v / 255 for v in ImageStat.Stat(small).mean)
    hue, light, _ = colorsys.rgb_to_hls(r, g, b)
    # Chroma, not HLS saturation: a pale cream or a near-black navy is not "vivid".
    chroma = max(r, g, b) - min(r, g, b)
    words = ["low-key lighting" if light < 0.3 else "bright airy light" if light > 0.7
             else "soft natural light"]
    if chroma < 0.1:
        words.append("muted tones")
    else:
        name = next(n for limit, n in _HUES if hue * 360 <= limit)
        words.append(f"vivid {name} palette" if chroma > 0.4 else f"{name} tones")
    return words
