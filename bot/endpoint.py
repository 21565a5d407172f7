"""Point discord.py at a Discord-compatible server (the sandbox) instead of discord.com.

discord.py keeps both addresses in process-wide class attributes (DESIGN §4). After READY the client
reconnects to the `resume_gateway_url` the server gave, so the server must hand out its own address.
Do not call `http._set_api_version`: it resets Route.BASE.
"""

from __future__ import annotations

import discord
import discord.gateway
import discord.http
import yarl

_ORIGINAL = (discord.http.Route.BASE, discord.gateway.DiscordWebSocket.DEFAULT_GATEWAY)


def point_at(api_base: str | None, gateway_url: str | None) -> None:
    if api_base:
        discord.http.Route.BASE = api_base.rstrip("/")
    if gateway_url:
        discord.gateway.DiscordWebSocket.DEFAULT_GATEWAY = yarl.URL(gateway_url)


def restore() -> None:
    discord.http.Route.BASE, discord.gateway.DiscordWebSocket.DEFAULT_GATEWAY = _ORIGINAL
