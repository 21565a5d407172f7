"""Torch's CPU threads, set per OS thread.

On CPU torch's parallel ops (and MKL's matrix products, on the same OpenMP runtime) run on an OpenMP team
that belongs to the thread calling them (libgomp). A process in which a second thread runs a parallel op
holds two teams, more OpenMP threads than cores, and libgomp then puts every team on its throttled,
sleeping barriers: a 4 x 512² render measured 0.73 s before and 1.03 s after one other thread had run a
model call (bench/render_thread.py). So all model work runs on the engine's one torch thread
(generation/engine.py), and its thread count is set there alone.

`torch.set_num_threads` sets more than the calling thread's OpenMP count: MKL's count for the whole process
and torch's default for threads made later, so a test or bench thread doing torch work beside the engine
would open a team of that size. OpenMP's own `omp_set_num_threads` is per thread by the OpenMP spec, and MKL
follows the calling thread's OpenMP count while nothing set MKL's: `use_threads` calls it in the libgomp
torch loaded, and falls back to torch.set_num_threads in a torch built without libgomp.
"""

from __future__ import annotations

import ctypes
import functools
import logging
from collections.abc import Callable

log = logging.getLogger(__name__)


@functools.cache
def _omp_set_num_threads() -> Callable[[int], object] | None:
    import torch  # noqa: F401  (loads torch's libgomp first)

    try:
        # The soname resolves to the libgomp torch already loaded (dlopen matches loaded libraries first).
        return ctypes.CDLL("libgomp.so.1").omp_set_num_threads  # type: ignore[no-any-return]
    except (OSError, AttributeError) as exc:
        log.info("OpenMP's per-thread count is not reachable (%s): torch.set_num_threads instead", exc)
        return None


def use_threads(count: int) -> None:
    """Torch in the calling thread uses `count` intra-op threads from now on; other threads keep theirs.
    Call it first thing in a thread (an executor's initializer)."""
    import torch

    omp = _omp_set_num_threads()
    if omp is None:
        torch.set_num_threads(count)
        return
    # Torch sets a thread's OpenMP count lazily, on the thread's first use, from its process-wide default:
    # trigger that first, or it would undo the call below.
    torch.get_num_threads()
    omp(count)


def current() -> int:
    """The calling thread's intra-op thread count."""
    import torch

    return torch.get_num_threads()
