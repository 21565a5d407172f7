"""`atelier demo`: the sandbox Discord server and the bot side by side, offline. A scripted member
runs /imagine, watches the progress, then clicks U1 and V2; the images land in --out."""

from __future__ import annotations

import argparse
import asyncio
import logging
import socket
import time
from pathlib import Path
from typing import Any

from pydantic import SecretStr

from bot.app import App
from bot.config import Settings

log = logging.getLogger(__name__)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def demo(settings: Settings, args: argparse.Namespace) -> int:
    return asyncio.run(_demo(settings, args))


def _result(sandbox: Any, channel: Any, job_hint: str) -> Any:
    for message in reversed(sandbox.messages(channel)):
        if job_hint in message.content and message.attachments and message.buttons():
            return message
    return None


async def _demo(settings: Settings, args: argparse.Namespace) -> int:
    from sandbox import Sandbox

    sandbox = Sandbox()
    await sandbox.start(port=args.port)
    settings = settings.model_copy(update={
        "discord_token": SecretStr(sandbox.bot_token),
        "discord_api_base": sandbox.api_base,
        "discord_gateway_url": sandbox.gateway_url,
        "dev_guild_id": sandbox.guild.id,
    })
    if args.serve:  # the web gallery too, logged in through the sandbox's OAuth2
        web_addr = f"127.0.0.1:{args.web_port or free_port()}"
        settings = settings.model_copy(update={
            "web_addr": web_addr, "public_url": f"http://{web_addr}",
            "oauth_client_secret": SecretStr(sandbox.oauth.client_secret),
        })
    app = App(settings, guild_ready_timeout=0.5)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)  # noqa: ASYNC240 (once, before anything runs)
    try:
        await app.start()
        await sandbox.wait_until_ready()
        await app.wait_ready()
        print(f"sandbox Discord at {sandbox.api_base} (gateway {sandbox.gateway_url})")
        alice, general = sandbox.users["alice"], sandbox.channel("general")

        started = time.perf_counter()
        interaction = await sandbox.slash(alice, general, "imagine",
                                          {"prompt": "a lighthouse at dusk --ar 3:2 --seed 7"})
        await interaction.wait_ack()
        print(f"/imagine acknowledged in {(interaction.ack_latency or 0) * 1000:.0f} ms")
        grid = await sandbox.wait_for(lambda: _result(sandbox, general, "lighthouse"), timeout=300)
        original = interaction.original
        edits = original.edits if original is not None else 0
        names = [b.get("label") or (b.get("emoji") or {}).get("name", "?") for b in grid.buttons()]
        print(f"grid delivered in {time.perf_counter() - started:.1f} s after {edits} edits; "
              f"buttons: {', '.join(names)}")
        (out / "grid.png").write_bytes(grid.attachments[0].data)

        for label, name in (("U1", "upscale_1.png"), ("V2", "variation_2.png")):
            button = next(b for b in grid.buttons() if b.get("label") == label)
            before = {m.id for m in sandbox.messages(general)}
            click = await sandbox.click(alice, grid, button["custom_id"])
            await click.wait_ack()

            def done(before: set[int] = before) -> Any:
                for m in sandbox.messages(general):
                    if m.id not in before and m.attachments and m.buttons() and "job" in m.content:
                        return m
                return None

            message = await sandbox.wait_for(done, timeout=300)
            (out / name).write_bytes(message.attachments[0].data)
            print(f"{label}: {message.content.splitlines()[0]}")
        print(f"images written to {out}/")
        if args.serve:
            print(f"open {sandbox.base_url}/client to run /imagine and click buttons in a browser")
            print(f"open {settings.public_url} for the web gallery (log in as any sandbox member)")
            print(f"serving; bot token {sandbox.bot_token!r}; Ctrl-C stops")
            await app.run_forever()
    finally:
        await app.stop()
        await sandbox.stop()
    return 0
