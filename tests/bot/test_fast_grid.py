"""The grid is visible the moment the render ends (a JPEG edited into the job's message), and the job
becomes done, with its buttons, only once the lossless PNGs are stored; /job and U1 use those PNGs.
The worker's store gate (ATELIER_TEST_STORE_HOLD_FILE) holds a batch between the two, deterministically."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest

from generation.request import Kind, RenderRequest
from generation.worker import STORE_HOLD_FILE_ENV
from sandbox import Sandbox
from tests.bot.helpers import click_for_result, fast_grid, image_of, job_id_of, result_for

WAIT_S = 120  # a hang guard only, never a timing assertion


def quadrant_error(a: np.ndarray, b: np.ndarray, swap: bool = False) -> float:
    """Mean absolute difference of two 2x2 grids; with `swap`, b's left and right columns exchanged
    (the error a wrong layout would have)."""
    if swap:
        half = b.shape[1] // 2
        b = np.concatenate([b[:, half:], b[:, :half]], axis=1)
    return float(np.abs(a.astype(int) - b.astype(int)).mean())


async def test_the_grid_shows_first_and_the_final_uses_the_stored_pngs(
        sandbox: Sandbox, start_bot: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    hold = tmp_path / "store-hold"
    hold.touch()
    monkeypatch.setenv(STORE_HOLD_FILE_ENV, str(hold))  # read when the bot's worker is made
    app = await start_bot()
    services = app.services
    alice, general = sandbox.users["alice"], sandbox.channel("general")

    interaction = await sandbox.slash(alice, general, "imagine",
                                      {"prompt": "a quiet harbour --n 4 --seed 5 --steps 2"})
    await interaction.wait_ack()
    shown = await sandbox.wait_for(lambda: fast_grid(interaction), timeout=WAIT_S)
    job_id = job_id_of(shown)
    fast = np.asarray(image_of(shown))
    assert shown.buttons() == []  # U / V need the stored files
    # Held between the fast grid and the lossless files: nothing is stored, the job is not done.
    job = await services.db.jobs.get(job_id)
    assert job is not None and job.status == "running" and job.grid_blob is None
    assert await services.db.images.for_job(job_id) == []

    hold.unlink()
    final = await sandbox.wait_for(lambda: result_for(sandbox, general, job_id), timeout=WAIT_S)
    assert final.id == shown.id  # the same message, now final
    assert final.attachments[0].filename == f"atelier_{job_id}.png"
    job = await services.db.jobs.get(job_id)
    assert job is not None and job.status == "done" and job.grid_blob is not None
    assert final.attachments[0].data == services.blobs.read_verified(job.grid_blob)
    lossless = np.asarray(image_of(final))
    request = RenderRequest.from_json(job.request)
    assert fast.shape == lossless.shape == (2 * request.height, 2 * request.width, 3)
    # The JPEG shows the same images in the same places: far closer to the PNG grid than the PNG grid
    # with its columns swapped is.
    assert quadrant_error(fast, lossless) < quadrant_error(fast, lossless, swap=True) / 3

    # /job and U1 work on the stored PNGs.
    again = await sandbox.slash(alice, general, "job", {"id": job_id})
    await again.wait_ack()
    assert again.original is not None
    assert again.original.attachments[0].data == final.attachments[0].data
    rows = sorted(await services.db.images.for_job(job_id), key=lambda r: r.index)
    assert len(rows) == 4
    upscaled = await click_for_result(sandbox, alice, general, final, "U1", timeout=WAIT_S)
    up = await services.db.jobs.get(job_id_of(upscaled))
    assert up is not None
    up_request = RenderRequest.from_json(up.request)
    assert up_request.kind == Kind.UPSCALE and up_request.source == rows[0].blob
