"""Start-up and delivery edge cases: global command sync only when the commands changed, and a result
whose message was deleted meanwhile is posted anew instead of being lost."""

from __future__ import annotations

from typing import Any

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
