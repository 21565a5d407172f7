"""Delivered once, through the real bot.delivery: a result that Discord refused (5xx) when the job
finished is delivered by the next start, and only once, however often the bot starts again."""

from __future__ import annotations

from typing import Any

from sandbox import Sandbox
from tests.bot.helpers import image_of, results


def result_states(message: Any, job_id: int) -> list[dict[str, Any]]:
    """Every state of the message (its edits and now) that showed the job's result (with its buttons: the
    grid shown the moment the render ends has none yet)."""
    states = [*message.history, message.snapshot()]
    return [s for s in states if f"job `{job_id}`" in s["content"] and s["attachments"] and s["components"]]


def refused_result(sandbox: Sandbox, job_id: int) -> bool:
    """Discord refused the job's result edit (its content names the job, as progress edits do not, and it
    carries the buttons, as the fast grid does not)."""
    return any(c.status == 503 and c.method == "PATCH" and (c.json or {}).get("components")
               and f"job `{job_id}`" in str((c.json or {}).get("content")) for c in sandbox.calls)


async def test_a_result_refused_by_discord_is_delivered_once_after_restarts(
        sandbox: Sandbox, start_bot: Any, hold: Any) -> None:
    alice, general = sandbox.users["alice"], sandbox.channel("general")
    app = await start_bot()
    assert app.services is not None
    db = app.services.db
    hold.close()  # the render waits after its first step
    interaction = await sandbox.slash(alice, general, "imagine", {"prompt": "a paper boat --steps 2 --n 2"})
    await interaction.wait_ack()
    [job] = await db.jobs.list_for_user(alice.id, limit=1)
    shown = interaction.original
    assert shown is not None
    # Once the progress preview is on screen (no edit is left pending), Discord starts answering every
    # call with a 503, and the job finishes.
    await sandbox.wait_for(lambda: "rendering" in shown.content and shown.attachments, timeout=60)
    sandbox.set_fault_rate(1.0, statuses=(503,))
    sandbox.faults.max_consecutive = 10**9
    hold.open()

    await sandbox.wait_for(lambda: refused_result(sandbox, job.id), timeout=120)
    row = await db.jobs.get(job.id)
    assert row is not None and row.status == "done" and row.delivered_at is None
    await app.stop()
    sandbox.set_fault_rate(0.0)
    sandbox.faults.max_consecutive = 2
    assert results(sandbox, general) == []

    # The next start sweeps the finished, undelivered job; more starts find nothing left to deliver.
    app = await start_bot()
    [message] = await sandbox.wait_for(lambda: results(sandbox, general) or None, timeout=60)
    for _ in range(2):
        await app.stop()
        app = await start_bot()
        assert app.bot is not None
        await app.bot.delivery.deliver_pending()  # what each start's sweep does, awaited here

    assert [m.id for m in results(sandbox, general)] == [message.id] == [shown.id]
    assert len(result_states(message, job.id)) == 1, "the result was delivered more than once"
    assert image_of(message).size == (2 * job.request["width"], job.request["height"])  # both images
    assert app.services is not None
    row = await app.services.db.jobs.get(job.id)
    assert row is not None and row.status == "done" and row.delivered_at is not None
