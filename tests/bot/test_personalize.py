"""`--p` through the sandbox: the personal style learnt from the jobs a member starred (⭐), versioned so
`--p v1` keeps meaning the same, and /prefer personalize show / reset."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from bot.app import App
from generation.personalize import profile_of
from generation.request import RenderRequest
from generation.tiny import IP_ADAPTER_FOLDER, ensure_tiny_model
from sandbox import Sandbox
from tests.bot.helpers import button, image_of, imagine, job_id_of


async def star(sandbox: Sandbox, user: Any, result: Any) -> None:
    clicked = await sandbox.click(user, result, button(result, "⭐"))
    await clicked.wait_ack()


async def prompt_of(app: App, result: Any) -> str:
    assert app.services is not None
    job = await app.services.db.jobs.get(job_id_of(result))
    assert job is not None
    return RenderRequest.from_json(job.request).prompt


async def refusal(sandbox: Sandbox, user: Any, prompt: str) -> str:
    interaction = await sandbox.slash(user, sandbox.channel("general"), "imagine", {"prompt": prompt})
    await interaction.wait_ack()
    assert interaction.original is not None and interaction.original.ephemeral
    return str(interaction.original.content)


async def personalize(sandbox: Sandbox, user: Any, sub: str) -> str:
    interaction = await sandbox.slash(user, sandbox.channel("general"), "prefer", {}, subcommand=sub,
                                      group="personalize")
    await interaction.wait_ack()
    assert interaction.original is not None and interaction.original.ephemeral
    return str(interaction.original.content)


async def test_p_learns_from_stars_keeps_versions_and_resets(sandbox: Sandbox, bot: App) -> None:
    assert bot.services is not None
    alice, bob, general = sandbox.users["alice"], sandbox.users["bob"], sandbox.channel("general")
    quick = "--steps 2 --n 1 --seed 5"
    made = [await imagine(sandbox, alice, general, f"{p} {quick}") for p in (
        "a cat, watercolor, soft light", "a ship, (watercolor:1.2), soft light, fog", "a tree, Watercolor",
        "a car, neon")]
    assert "star images from at least 3" in await refusal(sandbox, alice, f"a house --p {quick}")
    for result in made:
        await star(sandbox, alice, result)
    # Bob's stars are his: they teach alice's style nothing.
    other = await imagine(sandbox, bob, general, f"a kite, neon, chalk {quick}")
    await star(sandbox, bob, other)

    styled = await imagine(sandbox, alice, general, f"a house --p {quick}")
    assert await prompt_of(bot, styled) == "a house, watercolor, soft light"
    written = await imagine(sandbox, alice, general, f"a house, watercolor, soft light {quick}")
    assert image_of(styled).tobytes() == image_of(written).tobytes()
    assert "v1 (from 4 starred jobs): “watercolor, soft light”" in await personalize(sandbox, alice, "show")

    # One more star changes the style: v2 for `--p`, while `--p v1` keeps v1.
    await star(sandbox, alice, await imagine(sandbox, alice, general, f"a dog, watercolor, fog {quick}"))
    assert await prompt_of(bot, await imagine(sandbox, alice, general, f"a barn --p {quick}")) == (
        "a barn, watercolor, soft light, fog")
    assert await prompt_of(bot, await imagine(sandbox, alice, general, f"a barn --p v1 {quick}")) == (
        "a barn, watercolor, soft light")
    assert "no personal style v7" in await refusal(sandbox, alice, f"a barn --p v7 {quick}")
    versions = [await bot.services.db.personal.get(alice.id, v) for v in (1, 2, 3)]
    assert [s.version for s in versions if s] == [1, 2]

    # Reset: only new stars count; the old versions stay.
    assert "v1–v2 stay usable" in await personalize(sandbox, alice, "reset")
    assert "star images from at least 3" in await refusal(sandbox, alice, f"a barn --p {quick}")
    assert await prompt_of(bot, await imagine(sandbox, alice, general, f"a barn --p v2 {quick}")) == (
        "a barn, watercolor, soft light, fog")


def test_nothing_recurring_is_an_empty_profile() -> None:
    from generation.personalize import Liked

    assert profile_of([Liked("a cat, red"), Liked("a dog, blue"), Liked("a fox, green")]).empty
    mixed = profile_of([Liked("a, ink", (("ink", 0.6),)), Liked("b, ink", (("ink", 0.8),)), Liked("c")])
    assert (mixed.suffix, mixed.lora, mixed.lora_weight) == ("ink", "ink", 0.7)


async def test_p_adds_the_starred_images_as_a_style_reference_on_an_adapter_model(
        sandbox: Sandbox, start_bot: Any, tiny_data_dir: Path) -> None:
    adapter = ensure_tiny_model(tiny_data_dir) / IP_ADAPTER_FOLDER
    bot: App = await start_bot(own_engine=True, ATELIER_MODELS=f"ref=tiny?ip_adapter={adapter},plain=tiny")
    assert bot.services is not None
    alice, bob, general = sandbox.users["alice"], sandbox.users["bob"], sandbox.channel("general")
    quick = "--steps 2 --n 1 --seed 5"
    made = [await imagine(sandbox, alice, general, f"{p} {quick}") for p in (
        "a red cat, ink", "a blue ship, ink", "a green tree, ink")]
    for result in made:
        await star(sandbox, alice, result)
    # Bob stars one of his between alice's: it never joins her images.
    await star(sandbox, bob, await imagine(sandbox, bob, general, f"a yellow kite, ink {quick}"))

    styled = await imagine(sandbox, alice, general, f"a house --p {quick}")
    newest_first = " ".join(f"--sref {job_id_of(r)}.1" for r in reversed(made))
    explicit = await imagine(sandbox, alice, general, f"a house, ink {newest_first} {quick}")
    words_only = await imagine(sandbox, alice, general, f"a house, ink {quick}")
    assert image_of(styled).tobytes() == image_of(explicit).tobytes()
    assert image_of(styled).tobytes() != image_of(words_only).tobytes()
    v1 = await bot.services.db.personal.get(alice.id, 1)
    assert v1 is not None and v1.images == tuple(f"{job_id_of(r)}.1" for r in reversed(made))
    shown = await personalize(sandbox, alice, "show")
    assert "your 3 latest starred images" in shown and "on other models `--p` is the words and LoRA" in shown

    # The member's own `--sref` replaces the stars (rather than joining them past the 5-image limit).
    own = await imagine(sandbox, alice, general, f"a house --p --sref {job_id_of(made[0])}.1 {quick}")
    one = await imagine(sandbox, alice, general, f"a house, ink --sref {job_id_of(made[0])}.1 {quick}")
    assert image_of(own).tobytes() == image_of(one).tobytes()

    # On the model without an adapter `--p` is the words alone.
    assert bot.services is not None
    plain = await imagine(sandbox, alice, general, f"a house --p --model plain {quick}")
    job = await bot.services.db.jobs.get(job_id_of(plain))
    assert job is not None and not RenderRequest.from_json(job.request).references

    # A new star makes v2 from other images; `--p v1` renders as it did.
    await star(sandbox, alice, await imagine(sandbox, alice, general, f"a white dog, ink {quick}"))
    newest = await imagine(sandbox, alice, general, f"a house --p {quick}")
    assert await prompt_of(bot, newest) == "a house, ink"
    v2 = await bot.services.db.personal.get(alice.id, 2)
    assert v2 is not None and len(v2.images) == 4
    again = await imagine(sandbox, alice, general, f"a house --p v1 {quick}")
    assert image_of(again).tobytes() == image_of(styled).tobytes()
