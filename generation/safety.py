"""NSFW image checks behind one small interface the worker calls after rendering:
`checker.check(images) -> [flagged, ...]`.

- A real Stable Diffusion model may ship `safety_checker` + `feature_extractor` (diffusers'
  StableDiffusionSafetyChecker): `DiffusersSafetyChecker` runs it on the finished images.
- SDXL models and single-file checkpoints ship none: a standalone checker of the same class
  (`ATELIER_SAFETY_CHECKER`, e.g. CompVis/stable-diffusion-safety-checker) is loaded once and shared
  by every model that has none of its own.
- The tiny offline model has none; without a standalone checker, `SkinToneChecker` is a simple
  deterministic classifier (share of skin-tone pixels, the classic RGB rule) so the spoiler / block
  path runs end to end in tests.
- No checker: the guild's prompt policy alone decides (bot/policy.py).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Protocol

import numpy as np
from PIL import Image

# The diffusers checker logs "a black image will be returned instead" for every flagged image; Atelier
# never returns its black images (the guild's policy decides), so that line would only mislead.
logging.getLogger("diffusers.pipelines.stable_diffusion.safety_checker").setLevel(logging.ERROR)


class SafetyChecker(Protocol):
    def check(self, images: Sequence[Image.Image]) -> list[bool]:
        """One verdict per image: True means NSFW."""
        ...


class DiffusersSafetyChecker:
    """The model's own checker (CLIP concept similarity), as the SD pipelines run it."""

    def __init__(self, safety_checker: Any, feature_extractor: Any) -> None:
        self.safety_checker = safety_checker
        self.feature_extractor = feature_extractor

    def check(self, images: Sequence[Image.Image]) -> list[bool]:
        import torch

        if not images:
            return []
        module = self.safety_checker
        param = next(module.parameters())
        features = self.feature_extractor(list(images), return_tensors="pt")
        clip_input = features.pixel_values.to(device=param.device, dtype=param.dtype)
        # The module blacks out flagged entries of `images` in place; only the verdicts are used, so it
        # gets one placeholder pixel per image instead of a float copy of every render.
        placeholders = np.zeros((len(images), 1, 1, 3), dtype=np.float32)
        with torch.no_grad():
            _, flags = module(images=placeholders, clip_input=clip_input)
        return [bool(f) for f in flags]


def load_standalone_checker(source: str, *, device: str = "cpu", dtype: Any = None) -> DiffusersSafetyChecker:
    """Diffusers' StableDiffusionSafetyChecker and its CLIPImageProcessor from a hub id or a folder.

    The folder may hold the checker itself (config.json, weights, preprocessor_config.json, as in
    CompVis/stable-diffusion-safety-checker) or be a whole SD model folder, whose `safety_checker/` and
    `feature_extractor/` are then used. A folder never touches the network."""
    from diffusers.pipelines.stable_diffusion.safety_checker import StableDiffusionSafetyChecker
    from transformers import CLIPImageProcessor

    path = Path(source).expanduser()
    local = path.is_dir()
    weights = extractor = str(path) if local else source
    if local and (path / "safety_checker" / "config.json").is_file():
        weights, extractor = str(path / "safety_checker"), str(path / "feature_extractor")
    module: Any = StableDiffusionSafetyChecker.from_pretrained(weights, local_files_only=local)
    module = module.to(device=device, dtype=dtype).eval()
    processor = CLIPImageProcessor.from_pretrained(extractor, local_files_only=local)
    return DiffusersSafetyChecker(module, processor)


class SkinToneChecker:
    """Flags an image when at least `threshold` of its pixels are skin-toned (Kovac et al.'s RGB rule).

    Crude on real photographs, but deterministic and cheap: enough to stand in for a model's checker
    with the tiny model, whose outputs are noise-like."""

    def __init__(self, threshold: float = 0.4) -> None:
        if not 0.0 <= threshold <= 1.0:
            raise ValueError("threshold must be between 0 and 1")
        self.threshold = threshold

    @staticmethod
    def skin_fraction(image: Image.Image) -> float:
        # A strided sample of about 128x128 pixels: the same share as counting every pixel (to well
        # under a percent), at a fraction of the CPU that the PNG encoders need at the same moment.
        step = max(1, min(image.width, image.height) // 128)
        rgb = np.asarray(image.convert("RGB"))[::step, ::step].astype(np.int16)
        r, g, b = rgb[..., 0], rgb[..., 1], rgb[..., 2]
        spread = rgb.max(axis=-1) - rgb.min(axis=-1)
        skin = (r > 95) & (g > 40) & (b > 20) & (spread > 15) & (np.abs(r - g) > 15) & (r > g) & (r > b)
        return float(skin.mean()) if skin.size else 0.0

    def check(self, images: Sequence[Image.Image]) -> list[bool]:
        return [self.skin_fraction(im) >= self.threshold for im in images]


def detach_checker(pipeline: Any, *, tiny: bool, tiny_threshold: float = 0.4,
                   standalone: SafetyChecker | None = None) -> SafetyChecker | None:
    """Take the checker out of a freshly loaded pipeline and return it.

    A diffusers SD pipeline with a safety checker blacks out flagged images itself; Atelier lets the
    guild's NSFW policy decide (block, spoiler, age-restricted channels only, allow), so the pipeline
    must hand back the real pixels and the worker records the verdict instead."""
    checker = checker_for(pipeline, tiny=tiny, tiny_threshold=tiny_threshold, standalone=standalone)
    if getattr(pipeline, "safety_checker", None) is not None:
        pipeline.safety_checker = None
        if hasattr(pipeline, "register_to_config"):
            pipeline.register_to_config(requires_safety_checker=False)
    return checker


def checker_for(pipeline: Any, *, tiny: bool, tiny_threshold: float = 0.4,
                standalone: SafetyChecker | None = None) -> SafetyChecker | None:
    """The checker for a loaded pipeline: its own if it has one, else the shared standalone checker,
    else the skin-tone stand-in for the tiny model, else None (prompt policy only)."""
    safety = getattr(pipeline, "safety_checker", None)
    extractor = getattr(pipeline, "feature_extractor", None)
    if safety is not None and extractor is not None:
        return DiffusersSafetyChecker(safety, extractor)
    if standalone is not None:
        return standalone
    if tiny:
        return SkinToneChecker(tiny_threshold)
    return None
