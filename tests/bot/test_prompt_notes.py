"""A prompt longer than the model reads: the member is told, in the job's own message."""

from __future__ import annotations

from bot.app import App
from sandbox import Sandbox
from tests.bot.helpers import imagine


async def test_an_over_cap_prompt_gets_a_note_in_its_messages(sandbox: Sandbox, bot: App) -> None:
    alice, general = sandbox.users["alice"], sandbox.channel("general")
    words = " ".join(f"w{i:03d}" for i in range(100))  # 400 tokens of the tiny model: 225 are read
    note = "the prompt was cut after 56 words"
    message = await imagine(sandbox, alice, general, f"{words} --steps 2 --seed 3")
    assert note in message.content
    contents = [snap.get("content", "") for snap in message.history]
    assert any("queued" in c and note in c for c in contents)  # told at once, not only at the end

    short = await imagine(sandbox, alice, general, "a fox --steps 2")
    assert "was cut" not in short.content
    assert all("was cut" not in snap.get("content", "") for snap in short.history)

