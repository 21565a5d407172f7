"""Start-up and delivery edge cases: global command sync only when the commands changed, and a result
whose message was deleted meanwhile is posted anew instead of being lost."""

from __future__ import annotations

import asyncio
from typing import Any

from bot.app import App
from sandbox import Sandbox
from tests.bot.helpers import results


def global_syncs(sandbox: Sandbox) -> int:
    return sum(1 for c in sandbox.calls
               if c.method == "PUT" and c.path.endswith("/commands") and "/guilds/" not in c.path)


async def test_global_commands_sync_only_when_they_change(sandbox: Sandbox, start_bot: Any) -> None:
    first = await start_bot(ATELIER_DEV_GUILD_ID=None)
    assert global_syncs(sandbox) == 1
    assert any(c["name"] == "imagine" for c in sandbox.commands())
    await first.stop()
    await start_bot(ATELIER_DEV_GUILD_ID=None)
    assert global_syncs(sandbox) == 1  # same command set: no second sync on restart


async def test_result_of_a_deleted_message_is_posted_anew(sandbox: Sandbox, start_bot: Any) -> None:
    app = await start_bot()
    alice, general = sandbox.users["alice"], sandbox.channel("general")
    assert app.services is not None
    await app.services.scheduler.pause()
    interaction = await sandbox.slash(alice, general, "imagine", {"prompt": "a lost letter --steps 2 --n 1"})
    await interaction.wait_ack()
    assert interaction.original is not None
    await sandbox.delete_message(interaction.original)  # someone removes the "queued" message
    await app.services.scheduler.resume()
    message = await sandbox.wait_for(lambda: next(iter(results(sandbox, general)), None), timeout=120)
    assert message.id != interaction.original.id and "lost letter" in message.content
    assert f"<@{alice.id}>" in message.content


async def test_a_result_for_a_deleted_channel_is_kept_not_retried_forever(sandbox: Sandbox,
                                                                          bot: App) -> None:
    """A moderator deletes the channel while a job waits: nothing can be posted there any more, so the
    job is settled (not retried every sweep), and its owner still finds it with /job."""
    assert bot.services is not None
    alice, general = sandbox.users["alice"], sandbox.channel("general")
    doomed = sandbox.add_channel(sandbox.guild, "doomed")
    await bot.services.scheduler.pause()
    interaction = await sandbox.slash(alice, doomed, "imagine",
                                      {"prompt": "a vanishing room --steps 2 --n 1"})
    await interaction.wait_ack()
    job_id = (await bot.services.db.jobs.list_for_user(alice.id, limit=1))[0].id
    sandbox.delete_channel(doomed)
    await bot.services.scheduler.resume()

    async def settled() -> bool:
        job = await bot.services.db.jobs.get(job_id)  # type: ignore[union-attr]
        return job is not None and job.delivered_at is not None

    deadline = asyncio.get_running_loop().time() + 60
    while not await settled():
        assert asyncio.get_running_loop().time() < deadline, "the job was never settled"
        await asyncio.sleep(0.1)
    posts = [c for c in sandbox.calls if c.method == "POST" and f"/channels/{doomed.id}/" in c.path]
    assert [c.status for c in posts] == [404]
    assert sandbox.messages(doomed) == []

    shown = await sandbox.slash(alice, general, "job", {"id": job_id})
    await shown.wait_ack()
    assert shown.original is not None and "a vanishing room" in shown.original.content
    assert len(shown.original.attachments) == 1
