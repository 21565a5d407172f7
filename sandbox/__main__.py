"""`python -m sandbox`: run the sandbox standalone and print where to point a bot."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import signal

from sandbox.server import Sandbox


async def serve(host: str, port: int, token: str) -> None:
    sb = Sandbox(bot_token=token)
    await sb.start(host, port)
    print(f"ATELIER_DISCORD_API_BASE={sb.api_base}")
    print(f"ATELIER_DISCORD_GATEWAY_URL={sb.gateway_url}")
    print(f"DISCORD_TOKEN={sb.bot_token}")
    print(f"ATELIER_DEV_GUILD_ID={sb.guild.id}", flush=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError):
            loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    await sb.stop()


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m sandbox", description=__doc__)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--token", default="sandbox-token")
    args = parser.parse_args()
    asyncio.run(serve(args.host, args.port, args.token))


if __name__ == "__main__":
    main()
