"""What the web gallery needs from the operator, as one immutable value (the bot builds it from Settings)."""

from __future__ import annotations

from dataclasses import dataclass, field

from yarl import URL

DISCORD_API = "https://discord.com/api/v10"


@dataclass(frozen=True)
class WebConfig:
    public_url: str  # where browsers reach the gallery: the OAuth2 redirect and the cookies' scope
    client_id: str
    client_secret: str = field(repr=False)
    secret_key: bytes = field(repr=False)  # signs session cookies
    api_base: str = DISCORD_API
    models: tuple[str, ...] = ()  # the model filter's choices
    kinds: tuple[str, ...] = ("txt2img", "variation", "upscale", "img2img", "canvas")
    login_limit: tuple[int, float] = (10, 60.0)  # login attempts per client address per window (s)
    search_limit: tuple[int, float] = (30, 60.0)  # searches per member per window (s)
    session_hours: float = 12.0  # then log in again: guild membership is read afresh at each login

    @property
    def discord_origin(self) -> URL:
        """discord.com for the real API (https://discord.com/api/v10), the sandbox's own origin in tests."""
        return URL(self.api_base).origin()

    @property
    def authorize_url(self) -> URL:
        return self.discord_origin / "oauth2" / "authorize"

    @property
    def token_url(self) -> str:
        return self.api_base.rstrip("/") + "/oauth2/token"

    @property
    def redirect_uri(self) -> str:
        return self.public_url.rstrip("/") + "/oauth/callback"

    @property
    def secure(self) -> bool:
        return URL(self.public_url).scheme == "https"

    @property
    def origin(self) -> str:
        return str(URL(self.public_url).origin())

    def message_link(self, guild_id: int | None, channel_id: int | None,
                     message_id: int | None) -> str | None:
        if channel_id is None or message_id is None:
            return None
        return str(self.discord_origin / "channels" / (str(guild_id) if guild_id else "@me")
                   / str(channel_id) / str(message_id))
