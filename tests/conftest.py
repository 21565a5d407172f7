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


# Every family's tiny model, by the name the registries below give it.
FAMILY_MODELS = ("sd15", "sd2", "sdxl", "sd3", "flux-schnell", "flux-dev")


@pytest.fixture(scope="session")
def family_dirs(tiny_data_dir: Path) -> dict[str, Path]:
    """Each family's tiny model as a diffusers folder (written once per session under the data dir)."""
    from generation.tiny import ensure_tiny_model

    return {name: ensure_tiny_model(tiny_data_dir, family=name) for name in FAMILY_MODELS}


@pytest.fixture(scope="session")
def family_engine(family_dirs: dict[str, Path], tiny_data_dir: Path) -> Any:
    """An Engine over every family's tiny model, each loaded from its folder (the family is detected
    from model_index.json) and named after its family; all stay loaded."""
    from generation.engine import Engine
    from generation.models import ModelRegistry

    sources = [(name, str(folder)) for name, folder in family_dirs.items()]
    return Engine(ModelRegistry(sources, tiny_data_dir, device="cpu", max_loaded=len(sources)))


@pytest.fixture(scope="session")
def refiner_engine(family_dirs: dict[str, Path], tiny_data_dir: Path) -> Any:
    """An Engine with the tiny SDXL as `xl` (finished by the tiny refiner `ref` from half the noise
    schedule on), `plain` (the same SDXL without a refiner) and `ref` itself."""
    from generation.engine import Engine
    from generation.models import ModelRegistry
    from generation.tiny import REFINER, ensure_tiny_model

    refiner = ensure_tiny_model(tiny_data_dir, family=REFINER)
    sdxl = str(family_dirs["sdxl"])
    sources = [("xl", f"{sdxl}?refiner=ref&refiner_at=0.5"), ("plain", sdxl), ("ref", str(refiner))]
    return Engine(ModelRegistry(sources, tiny_data_dir, device="cpu", max_loaded=3))
