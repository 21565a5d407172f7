"""Sandbox overhead: INTERACTION_CREATE -> ack latency and REST round trips with a bare discord.py client.

This is the floor under the bot's own "ack within 100 ms" figure: what the sandbox and discord.py
cost with a handler that answers at once. Printed side by side: no faults, then 20 % faults.

    .venv/bin/python bench/sandbox_ack.py [--n 300]
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import time

import discord
import yarl
from discord import app_commands

from sandbox import Sandbox


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


async def measure(sb: Sandbox, client: discord.Client, n: int, label: str) -> dict[str, float]:
    alice, general = sb.users["alice"], sb.channel("general")
    lat = []
    for _ in range(n):
        inter = await sb.slash(alice, general, "ping")
        await inter.wait_ack(15)
        assert inter.ack_latency is not None
        lat.append(inter.ack_latency * 1000)
    burst = await asyncio.gather(*(sb.slash(alice, general, "ping") for _ in range(50)))
    await asyncio.gather(*(i.wait_ack(30) for i in burst))
    burst_lat = [i.ack_latency * 1000 for i in burst if i.ack_latency is not None]
    channel = client.get_channel(general.id)
    assert isinstance(channel, discord.TextChannel)
    started = time.perf_counter()
    sends, raised = 100, 0
    for k in range(sends):
        try:
            await channel.send(f"m{k}")
        except discord.DiscordServerError:
            # discord.py's HTTPClient retries 500/502/504/524 but not 503: the bot must.
            raised += 1
    rate = sends / (time.perf_counter() - started)
    return {
        "ack p50 ms": statistics.median(lat),
        "ack p99 ms": pct(lat, 0.99),
        "burst-of-50 p99 ms": pct(burst_lat, 0.99),
        "channel.send /s": rate,
        "channel.send raised %": 100 * raised / sends,
    }


async def main(n: int) -> None:
    sb = Sandbox()
    await sb.start()
    discord.http.Route.BASE = sb.api_base
    discord.gateway.DiscordWebSocket.DEFAULT_GATEWAY = yarl.URL(sb.gateway_url)
    client = discord.Client(intents=discord.Intents.default(), guild_ready_timeout=0.1)
    tree = app_commands.CommandTree(client)

    @tree.command(description="pong")
    async def ping(interaction: discord.Interaction) -> None:
        await interaction.response.send_message("pong")

    await client.login(sb.bot_token)
    task = asyncio.create_task(client.connect())
    await client.wait_until_ready()
    guild = discord.Object(id=sb.guild.id)
    tree.copy_global_to(guild=guild)
    await tree.sync(guild=guild)

    clean = await measure(sb, client, n, "no faults")
    sb.set_fault_rate(0.2, seed=1)
    # Fewer rounds: every faulted 5xx costs discord.py a fixed 1 s backoff.
    faulty = await measure(sb, client, max(20, n // 5), "20% faults")
    sb.set_fault_rate(0.0)

    print(f"{'figure':<22}{'no faults':>12}{'20% faults':>12}")
    for key in clean:
        print(f"{key:<22}{clean[key]:>12.1f}{faulty[key]:>12.1f}")
    await client.close()
    await asyncio.wait_for(task, 5)
    await sb.stop()


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--n", type=int, default=300)
    asyncio.run(main(parser.parse_args().n))
