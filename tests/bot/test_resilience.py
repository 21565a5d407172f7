"""Nothing a member queued is lost: Discord faults, expired tokens, fairness under load, caps."""

from __future__ import annotations

import asyncio
import io
from typing import Any

from PIL import Image

from bot.app import App
from sandbox import Sandbox
from tests.bot.helpers import click_for_result, job_id_of, labels, results


async def test_results_survive_a_flaky_discord(sandbox: Sandbox, bot: App) -> None:
    alice, bob, general = sandbox.users["alice"], sandbox.users["bob"], sandbox.channel("general")
    sandbox.set_fault_rate(0.2, seed=7)
    prompts = [(alice, "a windmill --steps 3 --n 2 --seed 1"), (bob, "a lantern --steps 3 --n 1 --seed 2"),
               (alice, "a kite --steps 3 --n 1 --seed 3")]
    for user, prompt in prompts:
        interaction = await sandbox.slash(user, general, "imagine", {"prompt": prompt})
        await interaction.wait_ack(timeout=30)
    await sandbox.wait_for(lambda: len(results(sandbox, general)) == 3, timeout=180)
    faulted = [c for c in sandbox.calls if c.status >= 429]
    assert faulted, "the sandbox should have injected faults"
    sandbox.set_fault_rate(0.0)
    # Each job is shown exactly once.
    ids = [job_id_of(m) for m in results(sandbox, general)]
    assert sorted(ids) == sorted(set(ids))


async def test_expired_token_result_arrives_as_a_channel_message(sandbox: Sandbox, bot: App) -> None:
    alice, general = sandbox.users["alice"], sandbox.channel("general")
    assert bot.services is not None
    await bot.services.scheduler.pause()
    sandbox.token_ttl = 1.0
    interaction = await sandbox.slash(alice, general, "imagine", {"prompt": "a slow boat --steps 3 --n 1"})
    await interaction.wait_ack()
    await asyncio.sleep(1.5)  # the interaction token dies while the job waits in the queue
    await bot.services.scheduler.resume()
    message = await sandbox.wait_for(lambda: next(iter(results(sandbox, general)), None), timeout=120)
    assert interaction.original is not None
    assert message.id != interaction.original.id  # posted anew, not an edit of the dead interaction
    assert message.interaction_id is None
    assert f"<@{alice.id}>" in message.content and "slow boat" in message.content


async def test_two_users_flooding_are_served_fairly(sandbox: Sandbox, start_bot: Any) -> None:
    app = await start_bot(ATELIER_MAX_BATCH="1", ATELIER_QUEUE_MAX_PER_USER="4")
    alice, bob, general = sandbox.users["alice"], sandbox.users["bob"], sandbox.channel("general")
    assert app.services is not None
    await app.services.scheduler.pause()
    for i in range(4):
        it = await sandbox.slash(alice, general, "imagine", {"prompt": f"alice {i} --steps 2 --n 1"})
        await it.wait_ack()
    # The cap: a fifth queued job is refused with a clear ephemeral message, nothing queued.
    refused = await sandbox.slash(alice, general, "imagine", {"prompt": "alice 5 --steps 2 --n 1"})
    await refused.wait_ack()
    assert refused.original is not None and refused.original.ephemeral
    assert "queue" in refused.original.content.lower()
    for i in range(2):
        it = await sandbox.slash(bob, general, "imagine", {"prompt": f"bob {i} --steps 2 --n 1"})
        await it.wait_ack()
    assert len(app.services.scheduler.snapshot()) == 6
    await app.services.scheduler.resume()
    await sandbox.wait_for(lambda: len(results(sandbox, general)) == 6, timeout=180)
    order = []
    for message in results(sandbox, general):
        job = await app.services.db.jobs.get(job_id_of(message))
        assert job is not None and job.finished_at is not None
        order.append((job.finished_at, "alice" if job.user_id == alice.id else "bob"))
    owners = [who for _, who in sorted(order)]
    # Round robin: bob's two jobs do not wait behind all of alice's four.
    assert owners[:4].count("bob") == 2, owners


async def test_bad_options_are_refused_ephemerally(sandbox: Sandbox, bot: App) -> None:
    alice, general = sandbox.users["alice"], sandbox.channel("general")
    bad = [
        {"prompt": "a cat", "count": 9},
        {"prompt": "a cat", "steps": 100000},
        {"prompt": "a cat --ar 5:0"},
        {"prompt": "a cat --wat 3"},
        {"prompt": "a cat", "model": "no-such-model"},
        {"prompt": " "},
    ]
    for options in bad:
        interaction = await sandbox.slash(alice, general, "imagine", options)
        await interaction.wait_ack()
        assert interaction.original is not None and interaction.original.ephemeral, options
        assert interaction.original.content, options
    assert bot.services is not None
    assert bot.services.scheduler.snapshot() == []
    assert await bot.services.db.jobs.list_active() == []


async def test_a_result_over_the_upload_limit_still_arrives(sandbox: Sandbox, bot: App) -> None:
    """Discord refuses files over a server's upload limit (413, code 40005), and the real limit can be
    lower than the one discord.py computes from the boost tier: the bot shrinks the grid until it fits,
    says so, and delivers once."""
    alice, general = sandbox.users["alice"], sandbox.channel("general")
    sandbox.guild.upload_limit_override = 300_000  # the 2x2 grid PNG of 512² images is ~2.5 MB
    interaction = await sandbox.slash(alice, general, "imagine", {"prompt": "a lighthouse --steps 2 --n 4"})
    await interaction.wait_ack()
    [result] = await sandbox.wait_for(lambda: results(sandbox, general) or None, timeout=120)
    [attachment] = result.attachments
    assert attachment.filename.endswith(".jpg") and len(attachment.data) <= 300_000
    assert "over this server's upload limit" in result.content
    with Image.open(io.BytesIO(attachment.data)) as shown:
        assert shown.format == "JPEG" and 256 <= shown.width <= 1024 and shown.width == shown.height
    assert any(c.status == 413 for c in sandbox.calls)
    assert bot.services is not None
    job = await bot.services.db.jobs.get(job_id_of(result))
    assert job is not None and job.delivered_at is not None
    # The full PNG is kept: U1 still works from it.
    assert labels(result)[:4] == ["U1", "U2", "U3", "U4"]


async def test_gateway_drops_and_a_forced_reidentify_mid_render_lose_nothing(sandbox: Sandbox,
                                                                              bot: App, hold: Any) -> None:
    """The gateway socket drops while a job renders, then Discord invalidates the session: the running
    job's result still arrives, and a button clicked after the bot is back works."""
    alice, bob, general = sandbox.users["alice"], sandbox.users["bob"], sandbox.channel("general")
    hold.close()  # the job stays mid-render until the socket has dropped
    interaction = await sandbox.slash(alice, general, "imagine",
                                      {"prompt": "a storm at sea --steps 3 --n 4"})
    await interaction.wait_ack()
    assert await asyncio.to_thread(hold.holding.wait, 60)
    assert bot.services is not None
    [job] = await bot.services.db.jobs.list_for_user(alice.id, limit=1)
    assert job.status == "running"
    identifies = sandbox.gateway.identifies
    await sandbox.drop_gateway()
    await sandbox.invalidate_session(resumable=False)
    hold.open()
    [result] = await sandbox.wait_for(lambda: results(sandbox, general) or None, timeout=120)
    assert "a storm at sea" in result.content and len(result.attachments) == 1
    await sandbox.wait_for(lambda: sandbox.gateway.identifies > identifies, timeout=30)
    assert bot.bot is not None
    await asyncio.wait_for(bot.bot.wait_until_ready(), 30)
    upscaled = await click_for_result(sandbox, bob, general, result, "U2", timeout=120)
    assert "upscaled" in upscaled.content
