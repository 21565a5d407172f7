"""/imagine through the sandbox, the real discord.py client and the tiny model, as a member would."""

from __future__ import annotations

import io
from typing import Any

from PIL import Image

from bot.app import App
from sandbox import Sandbox
from tests.bot.helpers import button, imagine, labels


def result_message(sandbox: Sandbox, channel: Any, needle: str = "job `") -> Any:
    for message in reversed(sandbox.messages(channel)):
        if needle in message.content and message.attachments and message.buttons():
            return message
    return None


async def test_imagine_queues_renders_and_delivers_a_grid(sandbox: Sandbox, bot: App, hold: Any) -> None:
    alice, general = sandbox.users["alice"], sandbox.channel("general")
    hold.close()  # the render waits after its first step until its progress is on screen
    interaction = await sandbox.slash(alice, general, "imagine",
                                      {"prompt": "a lighthouse at dusk --seed 7 --steps 4", "count": 4})
    assert await interaction.wait_ack() == 4  # answered at once with a message
    first = interaction.original
    assert first is not None and not first.ephemeral
    initial = first.history[0]["content"] if first.history else first.content
    assert "queued — position 1" in initial
    # Progress with a preview: the edit after the 1.5 s edit interval shows the held first step.
    await sandbox.wait_for(lambda: "rendering" in first.content and "%" in first.content
                           and first.attachments, timeout=60)
    hold.open()

    message = await sandbox.wait_for(lambda: result_message(sandbox, general), timeout=120)
    assert message.id == interaction.original.id  # the same message turned into the result
    assert "lighthouse" in message.content and "seed 7" in message.content
    # The message went through "queued" then "rendering" with a progress bar and a preview.
    contents = [snap.get("content", "") for snap in message.history]
    assert any("queued" in c for c in contents)
    assert any("rendering" in c and "%" in c for c in contents)
    assert any(snap.get("attachments") for snap in message.history if "rendering" in snap.get("content", ""))
    grid = Image.open(io.BytesIO(message.attachments[0].data))
    assert bot.services is not None
    job = await bot.services.db.jobs.get(int(message.content.split("job `")[1].split("`")[0]))
    assert job is not None and job.status == "done" and job.delivered_at is not None
    width, height = job.request["width"], job.request["height"]
    assert grid.size == (2 * width, 2 * height)  # a 2x2 grid of the four images
    assert labels(message)[:5] == ["U1", "U2", "U3", "U4", "🔄"]
    assert labels(message)[5:10] == ["V1", "V2", "V3", "V4", "🖋"]
    assert {"Details", "⭐", "🗑️"} <= set(labels(message))


async def test_bad_flag_gets_an_ephemeral_error_and_queues_nothing(sandbox: Sandbox, bot: App) -> None:
    alice, general = sandbox.users["alice"], sandbox.channel("general")
    interaction = await sandbox.slash(alice, general, "imagine", {"prompt": "a cat --steps lots"})
    await interaction.wait_ack()
    reply = interaction.original
    assert reply is not None and reply.ephemeral
    assert "--steps" in reply.content
    assert bot.services is not None
    assert bot.services.scheduler.snapshot() == []


async def test_sampler_choice_shows_the_label_members_know(sandbox: Sandbox, bot: App) -> None:
    alice, general = sandbox.users["alice"], sandbox.channel("general")
    [command] = [c for c in sandbox.commands(sandbox.guild) if c["name"] == "imagine"]
    [option] = [o for o in command["options"] if o["name"] == "sampler"]
    choices = {c["name"]: c["value"] for c in option["choices"]}
    assert {"DPM++ 2M Karras", "DPM++ 2M SDE Karras", "DPM++ SDE Karras", "DPM++ 3M SDE", "Euler a", "UniPC",
            "LCM"} <= set(choices)
    assert len(choices) <= 25
    # The member picks "DPM++ 2M Karras"; Discord sends the choice's value.
    result = await imagine(sandbox, alice, general, "a harbour --steps 2 --n 1",
                           sampler=choices["DPM++ 2M Karras"])
    assert result.attachments
    details = await sandbox.click(alice, result, button(result, "Details"))
    await details.wait_ack()
    shown = details.original
    assert shown is not None and shown.ephemeral
    [embed] = shown.embeds
    assert {"name": "Sampler", "value": "DPM++ 2M Karras", "inline": True} in embed["fields"]
