"""What the engine benches share: their command line and their stopwatch."""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable
from typing import Any

from generation.engine import Engine
from generation.request import RenderRequest


def engine_parser(description: str | None) -> argparse.ArgumentParser:
    """--size, --steps, --images and --runs, with the engine benches' defaults; add a bench's own after."""
    parser = argparse.ArgumentParser(description=description,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", type=int, default=512)
    parser.add_argument("--steps", type=int, default=4)
    parser.add_argument("--images", type=int, default=4)
    parser.add_argument("--runs", type=int, default=5)
    return parser


def timed(call: Callable[..., Any], *args: Any) -> float:
    """Seconds `call(*args)` takes (on the calling thread: hand it to Engine.call to time a render there)."""
    started = time.perf_counter()
    call(*args)
    return time.perf_counter() - started


def timed_renders(engine: Engine, *requests: RenderRequest) -> float:
    """Seconds to render each request in turn, one call each."""
    started = time.perf_counter()
    for request in requests:
        engine.render([request])
    return time.perf_counter() - started
