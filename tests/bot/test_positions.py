"""Queue positions a member sees on their job's message move up as jobs ahead of it leave the queue."""

from __future__ import annotations

from bot.app import App
from sandbox import Sandbox
from tests.bot.helpers import button


async def test_a_waiting_message_moves_up_when_the_job_ahead_is_cancelled(sandbox: Sandbox, bot: App) -> None:
    assert bot.services is not None
    alice, bob, general = sandbox.users["alice"], sandbox.users["bob"], sandbox.channel("general")
    await bot.services.scheduler.pause()
    try:
        for user, prompt in [(alice, "alice's heron"), (bob, "bob's heron")]:
            it = await sandbox.slash(user, general, "imagine", {"prompt": f"{prompt} --steps 2 --n 1"})
            await it.wait_ack()
        first = (await bot.services.db.jobs.list_for_user(alice.id, limit=1))[0].id
        await sandbox.wait_for(lambda: any("bob's heron" in m.content and "position 2" in m.content
                                           for m in sandbox.messages(general)), timeout=10)

        listing = await sandbox.slash(alice, general, "queue")
        await listing.wait_ack()
        assert listing.original is not None
        done = await sandbox.click(alice, listing.original, button(listing.original, f"Cancel {first}"))
        await done.wait_ack()
        await sandbox.wait_for(lambda: any("bob's heron" in m.content and "position 1" in m.content
                                           for m in sandbox.messages(general)), timeout=10)
    finally:
        for entry in bot.services.scheduler.snapshot():
            await bot.services.scheduler.cancel(entry.job_id)
        await bot.services.scheduler.resume()
