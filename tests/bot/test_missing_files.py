"""A result whose image file is gone or damaged on disk: a damaged grid is never uploaded as it is (it is
rebuilt from the images), and a job whose image itself is gone is shown with an explanation, once, instead
of being retried by every delivery sweep forever."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from bot.app import App
from sandbox import Sandbox
from storage import BlobStore, Database
from tests.bot.helpers import image_of, imagine, job_id_of

MISSING = "the image file of this job is missing"


async def job_command(sandbox: Sandbox, user: Any, channel: Any, job_id: int) -> Any:
    shown = await sandbox.slash(user, channel, "job", {"id": job_id})
    await shown.wait_ack()
    assert shown.original is not None
    return shown.original


async def test_job_rebuilds_a_damaged_or_missing_grid_and_explains_a_missing_image(sandbox: Sandbox,
                                                                                   bot: App) -> None:
    assert bot.services is not None
    alice, general = sandbox.users["alice"], sandbox.channel("general")
    result = await imagine(sandbox, alice, general, "a paper boat --steps 2 --n 4 --ar 1:1")
    job_id = job_id_of(result)
    original = np.asarray(image_of(result))
    job = await bot.services.db.jobs.get(job_id)
    assert job is not None and job.grid_blob is not None
    grid = bot.services.blobs.path(job.grid_blob)

    grid.write_bytes(grid.read_bytes()[: grid.stat().st_size // 2])  # truncated on disk
    shown = await job_command(sandbox, alice, general, job_id)
    assert np.array_equal(np.asarray(image_of(shown)), original), "a damaged grid was uploaded"
    assert shown.buttons()

    grid.unlink()
    shown = await job_command(sandbox, alice, general, job_id)
    assert np.array_equal(np.asarray(image_of(shown)), original)

    [first, *_] = await bot.services.db.images.for_job(job_id)
    bot.services.blobs.path(first.blob).unlink()
    shown = await job_command(sandbox, alice, general, job_id)
    assert MISSING in shown.content and f"job `{job_id}`" in shown.content and not shown.attachments


def shows_missing(message: Any) -> int:
    """How many states of this message (every edit, and now) carried the explanation."""
    states = [*message.history, {"content": message.content}]
    return sum(MISSING in state.get("content", "") for state in states)


async def test_an_undelivered_job_whose_file_is_gone_is_explained_once(sandbox: Sandbox, start_bot: Any,
                                                                       tmp_path: Path) -> None:
    """The bot stopped before delivering a finished job, and its image file was lost meanwhile: the next
    start's sweep shows the explanation once and settles the job (before, it failed at every sweep)."""
    alice, general = sandbox.users["alice"], sandbox.channel("general")
    app = await start_bot()
    result = await imagine(sandbox, alice, general, "a glass harbour --steps 2 --n 1")
    job_id = job_id_of(result)
    await app.stop()

    db = await Database.open(tmp_path / "data" / "atelier.db")
    try:
        await db.connection.write("UPDATE jobs SET delivered_at = NULL WHERE id = ?", (job_id,))
        for image in await db.images.for_job(job_id):
            BlobStore(tmp_path / "data" / "images").path(image.blob).unlink()
    finally:
        await db.close()

    app = await start_bot()
    assert app.services is not None and app.bot is not None
    message = await sandbox.wait_for(lambda: result if shows_missing(result) else None, timeout=60)
    assert "glass harbour" in message.content and not message.attachments
    # Another sweep: it waits for the one in flight (one delivery per job at a time), then finds the job
    # settled and does nothing.
    await app.bot.delivery.deliver_pending()
    job = await app.services.db.jobs.get(job_id)
    assert job is not None and job.delivered_at is not None
    assert shows_missing(result) == 1
    assert [m for m in sandbox.messages(general) if MISSING in m.content] == [result]
