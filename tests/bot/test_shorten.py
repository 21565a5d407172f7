"""/shorten through the sandbox: an ephemeral analysis of a long prompt whose button imagines the shortened
prompt (read back from the message, so it works after a restart)."""

from __future__ import annotations

from typing import Any

from generation.request import RenderRequest
from sandbox import Sandbox
from tests.bot.helpers import button

LONG = ("quiet harbour with small boats under the pale morning sky and gulls over old stone piers near green "
        "hills beside --steps 1")


async def test_shorten_reports_and_its_button_imagines_the_shortened_prompt(sandbox: Sandbox,
                                                                             start_bot: Any) -> None:
    alice, general = sandbox.users["alice"], sandbox.channel("general")
    first = await start_bot()
    sent = await sandbox.slash(alice, general, "shorten", {"prompt": LONG})
    await sent.wait_ack()
    await sandbox.wait_for(lambda: sent.followups or (sent.original and sent.original.buttons()), timeout=60)
    shown: Any = sent.followups[-1] if sent.followups else sent.original
    assert shown.ephemeral and "tokens" in shown.content and "Shortened prompt:" in shown.content
    shortened = shown.content.split("```\n")[1].split("\n```")[0]
    assert shortened.endswith("--steps 1") and len(shortened) < len(LONG)

    await first.stop()
    second = await start_bot()
    assert second.services is not None
    await second.services.scheduler.pause()
    try:
        click = await sandbox.click(alice, shown, button(shown, "Imagine shortened"))
        await click.wait_ack()
        assert click.original is not None and "queued" in click.original.content
        job = (await second.services.db.jobs.list_for_user(alice.id, limit=1))[0]
        request = RenderRequest.from_json(job.request)
        assert request.prompt == shortened.removesuffix(" --steps 1") and request.steps == 1
    finally:
        await second.services.scheduler.cancel_all()
        await second.services.scheduler.resume()
