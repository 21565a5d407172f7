from __future__ import annotations

import os

# Any hidden hub call must fail loudly: nothing here may download.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest


@pytest.fixture(scope="session")
def tiny_data_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A session data dir holding the tiny models (written once, shared by every test)."""
    return tmp_path_factory.mktemp("atelier-data")


@pytest.fixture(scope="session")
def tiny_registry(tiny_data_dir: Path) -> Iterator[Any]:
    """A ModelRegistry with `tiny` (default, SD1.x) and `tiny-xl` (SDXL) on CPU."""
    from generation.models import ModelRegistry

    yield ModelRegistry([("tiny", "tiny"), ("tiny-xl", "tiny-xl")], tiny_data_dir, device="cpu")


@pytest.fixture(scope="session")
def tiny_engine(tiny_registry: Any) -> Any:
    """The real diffusers Engine over the tiny models, warmed up once per session."""
    from generation.engine import Engine

    engine = Engine(tiny_registry)
    engine.warm_up()
    return engine


@pytest.fixture
def hold(tiny_engine: Any) -> Iterator[Any]:
    """The shared engine's step gate (generation.engine.StepGate): a test closes it to keep a job
    rendering for as long as it needs; it is open again after every test, whatever happened."""
    gate = tiny_engine.step_gate
    yield gate
    gate.open()
