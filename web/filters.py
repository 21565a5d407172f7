"""The grid's query string -> a storage GalleryFilter, refusing what it cannot mean (a short message)."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field

from multidict import MultiMapping

from storage.gallery import ASPECTS, Facets
from web.config import WebConfig

MAX_SEARCH = 200


class BadFilter(ValueError):
    """The message is shown to the member as is."""


@dataclass(frozen=True)
class GridQuery:
    guild_id: int | None  # None: their DMs with the bot
    search: str = ""
    favourites: bool = False
    facets: Facets = field(default_factory=Facets)
    before: int | None = None

    def params(self) -> dict[str, str]:
        """The query string that asks for this view again (without the cursor)."""
        f = self.facets
        out = {"guild": "dm" if self.guild_id is None else str(self.guild_id)}
        for key, value in (("q", self.search), ("model", f.model), ("kind", f.kind), ("aspect", f.aspect)):
            if value:
                out[key] = str(value)
        if self.favourites:
            out["fav"] = "1"
        if f.since is not None:
            out["since"] = _day(f.since)
        if f.until is not None:
            out["until"] = _day(f.until - 86400)
        return out


def _day(ts: float) -> str:
    return dt.datetime.fromtimestamp(ts, dt.UTC).date().isoformat()


def _date(value: str, name: str) -> float:
    try:
        day = dt.date.fromisoformat(value)
    except ValueError:
        raise BadFilter(f"{name} must be a date like 2026-05-31.") from None
    return dt.datetime(day.year, day.month, day.day, tzinfo=dt.UTC).timestamp()


def _guild(raw: str | None, guilds: dict[int, str]) -> int | None:
    if raw is None or raw == "":
        return min(guilds) if guilds else None  # a first view: one of their servers
    if raw == "dm":
        return None
    try:
        guild_id = int(raw)
    except ValueError:
        raise BadFilter("Unknown server.") from None
    if guild_id not in guilds:
        raise BadFilter("That server is not one you share with the bot.")
    return guild_id


def parse(query: MultiMapping[str], guilds: dict[int, str], config: WebConfig) -> GridQuery:
    guild_id = _guild(query.get("guild"), guilds)
    search = query.get("q", "").strip()
    if len(search) > MAX_SEARCH:
        raise BadFilter(f"Search at most {MAX_SEARCH} characters.")
    model = query.get("model") or None
    if model is not None and config.models and model not in config.models:
        raise BadFilter("Unknown model.")
    kind = query.get("kind") or None
    if kind is not None and kind not in config.kinds:
        raise BadFilter("Unknown kind.")
    aspect = query.get("aspect") or None
    if aspect is not None and aspect not in ASPECTS:
        raise BadFilter("Aspect is square, landscape or portrait.")
    since = _date(query["since"], "From") if query.get("since") else None
    until = _date(query["until"], "To") + 86400 if query.get("until") else None  # the whole last day
    before = None
    if query.get("before"):
        try:
            before = int(query["before"])
        except ValueError:
            raise BadFilter("Bad page cursor.") from None
    return GridQuery(guild_id, search, query.get("fav") == "1",
                     Facets(model=model, kind=kind, aspect=aspect, since=since, until=until), before)
