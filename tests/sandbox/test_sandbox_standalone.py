"""`python -m sandbox` runs standalone and prints where to point a bot."""

from __future__ import annotations

import asyncio
import sys

import aiohttp


async def test_python_m_sandbox_serves() -> None:
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "sandbox", "--token", "standalone-token",
        stdout=asyncio.subprocess.PIPE,
    )
    try:
        assert proc.stdout is not None
        lines = {}
        for _ in range(4):
            raw = await asyncio.wait_for(proc.stdout.readline(), 30)
            key, _, value = raw.decode().strip().partition("=")
            lines[key] = value
        assert lines["DISCORD_TOKEN"] == "standalone-token"
        assert lines["ATELIER_DISCORD_GATEWAY_URL"].startswith("ws://127.0.0.1:")
        headers = {"Authorization": "Bot standalone-token"}
        async with aiohttp.ClientSession() as http:
            async with http.get(lines["ATELIER_DISCORD_API_BASE"] + "/users/@me", headers=headers) as resp:
                assert resp.status == 200 and resp.headers["Content-Type"] == "application/json"
                assert (await resp.json())["bot"] is True
            async with http.get(lines["ATELIER_DISCORD_API_BASE"] + "/users/@me") as resp:
                assert resp.status == 401
    finally:
        proc.terminate()
        await asyncio.wait_for(proc.wait(), 10)
