"""The standalone image checker (ATELIER_SAFETY_CHECKER): loaded from a folder through diffusers' own
class, shared by every model without a checker, and a warning at start for a model left without one."""

from __future__ import annotations

import logging
import math
from pathlib import Path
from typing import Any

import pytest

from generation.engine import Engine
from generation.errors import RenderError
from generation.models import ModelRegistry
from generation.request import RenderRequest
from generation.tiny import ensure_tiny_model, write_tiny_safety_checker


@pytest.fixture(scope="module")
def checkers(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Two tiny checkers: one whose concept thresholds are -inf (flags every image), one +inf (none)."""
    root = tmp_path_factory.mktemp("checkers")
    return {"flags": write_tiny_safety_checker(root / "flags", -math.inf),
            "passes": write_tiny_safety_checker(root / "passes", math.inf)}


def _render(registry: ModelRegistry, model: str) -> list[Any]:
    request = RenderRequest(prompt="a calm lake", model=model, width=64, height=64, steps=1, guidance=7.0,
                            sampler="euler", seeds=(1, 2))
    return Engine(registry).render([request])[0]


@pytest.mark.parametrize(("checker", "flagged"), [("flags", True), ("passes", False)])
def test_one_standalone_checker_judges_every_model_without_its_own(
        tiny_data_dir: Path, checkers: dict[str, Path], checker: str, flagged: bool) -> None:
    registry = ModelRegistry([("xl", "tiny-xl"), ("sd", "tiny")], tiny_data_dir, device="cpu",
                             safety_checker=str(checkers[checker]))
    xl_checker, sd_checker = registry.safety_checker("xl"), registry.safety_checker("sd")
    assert xl_checker is not None and xl_checker is sd_checker  # one instance, shared
    assert xl_checker.check(_render(registry, "xl")) == [flagged, flagged]
    assert sd_checker.check(_render(registry, "sd")) == [flagged, flagged]


def test_a_model_left_without_a_checker_is_named_at_start(
        tiny_data_dir: Path, checkers: dict[str, Path], caplog: pytest.LogCaptureFixture) -> None:
    # A local diffusers folder saved without a safety checker (as SDXL and most community models are);
    # the built-in tiny model has its skin-tone stand-in.
    folder = ensure_tiny_model(tiny_data_dir)
    with caplog.at_level(logging.WARNING, logger="generation.models"):
        ModelRegistry([("community", str(folder)), ("tiny", "tiny")], tiny_data_dir, device="cpu")
    unchecked = [r.getMessage() for r in caplog.records if "no image safety checker" in r.getMessage()]
    assert len(unchecked) == 1 and "'community'" in unchecked[0] and "ATELIER_SAFETY_CHECKER" in unchecked[0]

    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="generation.models"):
        ModelRegistry([("community", str(folder))], tiny_data_dir, device="cpu",
                      safety_checker=str(checkers["passes"]))
    assert not [r for r in caplog.records if "no image safety checker" in r.getMessage()]


def test_a_missing_checker_folder_fails_the_load_with_its_path(tiny_data_dir: Path, tmp_path: Path) -> None:
    missing = tmp_path / "no-such-checker"
    registry = ModelRegistry([("tiny", "tiny")], tiny_data_dir, device="cpu", safety_checker=str(missing))
    with pytest.raises(RenderError, match=r"Could not load the safety checker from .*no-such-checker"):
        registry.pipeline("tiny")
