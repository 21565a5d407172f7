"""Torch's CPU threads, set per OS thread.

On CPU torch's parallel ops (and MKL's matrix products, on the same OpenMP runtime) run on an OpenMP team
that belongs to the thread calling them (libgomp). A process in which a second thread runs a parallel op
holds two teams, more OpenMP threads than cores, and libgomp then puts every team on its throttled,
sleeping barriers: a 4 x 512² render measured 0.77 s before and 1.0 s after one other thread had run a
model call (bench/render_thread.py). So the engine renders on one torch thread with its intra-op threads,
and model work that must not wait for a render (a caption, an upload's safety check) runs on a side
thread held to one intra-op thread: it runs no parallel region and starts no team.

`torch.set_num_threads` cannot do either: besides the calling thread's OpenMP count it sets MKL's count
for the whole process, and MKL then opens a team of that size in any thread that multiplies matrices
(measured: a side thread's matmul started one and slowed the renders again). OpenMP's own
`omp_set_num_threads` is per thread by the OpenMP spec, and MKL follows the calling thread's OpenMP count
while nothing set MKL's: that is what `use_threads` calls, in the libgomp torch loaded. Without it (a torch
built without libgomp) `use_threads` falls back to torch.set_num_threads and `can_confine()` is False:
side work then waits for the torch thread instead.
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
        log.info("OpenMP's per-thread count is not reachable (%s): model work for commands waits for renders",
                 exc)
        return None


def can_confine() -> bool:
    """Whether a thread's torch thread count can be set without changing other threads'."""
    return _omp_set_num_threads() is not None


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
