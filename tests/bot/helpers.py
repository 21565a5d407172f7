"""Small readers over what the sandbox recorded, shared by the bot tests."""

from __future__ import annotations

import io
from typing import Any

from PIL import Image

from sandbox import Sandbox


def results(sandbox: Sandbox, channel: Any) -> list[Any]:
    """Messages in the channel that show a finished job (an image and buttons)."""
    return [m for m in sandbox.messages(channel) if "job `" in m.content and m.attachments and m.buttons()]


def result_for(sandbox: Sandbox, channel: Any, job_id: int) -> Any:
    for message in results(sandbox, channel):
        if f"job `{job_id}`" in message.content:
            return message
    return None


def job_id_of(message: Any) -> int:
    return int(message.content.split("job `", 1)[1].split("`", 1)[0])


def labels(message: Any) -> list[str]:
    return [b.get("label") or (b.get("emoji") or {}).get("name", "") for b in message.buttons()]


def button(message: Any, label: str) -> str:
    for b in message.buttons():
        if (b.get("label") or (b.get("emoji") or {}).get("name", "")) == label:
            return str(b["custom_id"])
    raise AssertionError(f"no button {label!r} in {labels(message)}")


def image_of(message: Any, index: int = 0) -> Image.Image:
    return Image.open(io.BytesIO(message.attachments[index].data)).convert("RGB")


async def _new_result(sandbox: Sandbox, channel: Any, before: set[int], timeout: float) -> Any:  # noqa: ASYNC109
    """Wait for a result message that was not there before."""

    def found() -> Any:
        return next((m for m in results(sandbox, channel) if m.id not in before), None)

    return await sandbox.wait_for(found, timeout=timeout)


async def imagine(sandbox: Sandbox, user: Any, channel: Any, prompt: str,
                  timeout: float = 120, **options: Any) -> Any:  # noqa: ASYNC109
    """Run /imagine and wait for its result message."""
    before = {m.id for m in results(sandbox, channel)}
    interaction = await sandbox.slash(user, channel, "imagine", {"prompt": prompt, **options})
    await interaction.wait_ack()
    return await _new_result(sandbox, channel, before, timeout)


async def click_for_result(sandbox: Sandbox, user: Any, channel: Any, message: Any,
                           label: str, timeout: float = 120) -> Any:  # noqa: ASYNC109
    """Click a button that starts a new job and wait for that job's result message."""
    before = {m.id for m in results(sandbox, channel)}
    interaction = await sandbox.click(user, message, button(message, label))
    await interaction.wait_ack()
    return await _new_result(sandbox, channel, before, timeout)


def shows_rendering(interaction: Any) -> bool:
    """The job's message says "rendering" now or did at some edit (the throttle may skip one)."""
    shown = interaction.original
    return shown is not None and any("rendering" in snap.get("content", "")
                                     for snap in [*shown.history, {"content": shown.content}])


def fast_grid(interaction: Any) -> Any:
    """The job's message while it shows the fast grid: a JPEG named after the job, no buttons yet."""
    message = interaction.original
    if message is None or not message.attachments:
        return None
    name = message.attachments[0].filename
    return message if name.startswith("atelier_") and name.endswith(".jpg") else None
