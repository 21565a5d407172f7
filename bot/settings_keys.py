"""Guild and member settings: every key with its type and default, declared once (the role of
Red-DiscordBot's `Config.register_guild`). Each declaration is a frozen dataclass; storage keeps an
owner's settings as one JSON object and knows no keys (storage/settings.py), and every read and write
goes through a `Scope` here, so a misspelt key is an error instead of a silent new one.

(A guild's queue pause is not a setting: the scheduler keeps it in storage's own table, `db.pauses`.)
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field, fields
from typing import TYPE_CHECKING, Any, Generic, Literal, TypeVar

if TYPE_CHECKING:
    from storage.db import Database
    from storage.settings import GuildSettingsStore, UserSettingsStore

NsfwMode = Literal["allow", "spoiler", "age_restricted", "block"]
NSFW_MODES: tuple[NsfwMode, ...] = ("allow", "spoiler", "age_restricted", "block")
# Discord wants NSFW material in age-restricted channels only, so that is the default.
DEFAULT_NSFW: NsfwMode = "age_restricted"


@dataclass(frozen=True)
class GuildSettings:
    """A guild's moderation settings (/admin), with defaults for what was never set."""

    max_queued: int | None = None
    max_steps: int | None = None
    max_size: int | None = None  # longest side in pixels
    max_count: int | None = None
    cooldown_s: float = 0.0
    role_priority: dict[int, float] = field(default_factory=dict)
    allowed_channels: list[int] = field(default_factory=list)  # empty: every channel
    denied_channels: list[int] = field(default_factory=list)
    nsfw: NsfwMode = DEFAULT_NSFW
    # Server wildcards (`__colour__` in a prompt): list name -> entries (/admin wildcards).
    wildcards: dict[str, list[str]] = field(default_factory=dict)

    @classmethod
    def from_stored(cls, data: dict[str, Any]) -> GuildSettings:
        def opt_int(key: str) -> int | None:
            value = data.get(key)
            return None if value is None else int(value)

        nsfw = data.get("nsfw", DEFAULT_NSFW)
        return cls(
            max_queued=opt_int("max_queued"),
            max_steps=opt_int("max_steps"),
            max_size=opt_int("max_size"),
            max_count=opt_int("max_count"),
            cooldown_s=float(data.get("cooldown_s") or 0.0),
            role_priority={int(k): float(v) for k, v in (data.get("role_priority") or {}).items()},
            allowed_channels=[int(c) for c in data.get("allowed_channels") or []],
            denied_channels=[int(c) for c in data.get("denied_channels") or []],
            nsfw=nsfw if nsfw in NSFW_MODES else DEFAULT_NSFW,
            wildcards={str(k): [str(v) for v in vs] for k, vs in (data.get("wildcards") or {}).items()},
        )

    def channel_allowed(self, channel_id: int | None) -> bool:
        if channel_id is None:
            return True
        if channel_id in self.denied_channels:
            return False
        return not self.allowed_channels or channel_id in self.allowed_channels


# What `/admin limits reset:True` clears.
LIMIT_KEYS = ("max_queued", "max_steps", "max_size", "max_count", "cooldown_s", "role_priority")


@dataclass(frozen=True)
class MemberSettings:
    """A member's defaults for /imagine (/settings) and private mode (results ephemeral and kept out
    of others' galleries)."""

    model: str | None = None
    aspect: str | None = None
    steps: int | None = None
    guidance: float | None = None
    negative: str | None = None
    count: int | None = None
    private: bool = False
    # /prefer: custom options (`--mine` -> its saved text and flags) and a suffix added to every prompt.
    options: dict[str, str] = field(default_factory=dict)
    suffix: str | None = None

    @classmethod
    def from_stored(cls, data: dict[str, Any]) -> MemberSettings:
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in known and v is not None})

    def defaults(self) -> dict[str, Any]:
        """The request options among these (everything but the private mode)."""
        return {key: getattr(self, key) for key in DEFAULT_KEYS}


# The member settings that fill a request's options; "private" is a mode, not an option.
DEFAULT_KEYS = ("model", "aspect", "steps", "guidance", "negative", "count")


S = TypeVar("S", GuildSettings, MemberSettings)


class Scope(Generic[S]):
    """Read and write one kind of owner's settings (a guild's, a member's) by their declared keys."""

    def __init__(self, declared: type[S],
                 store_of: Callable[[Database], GuildSettingsStore | UserSettingsStore]) -> None:
        self.declared: type[S] = declared
        self.keys = tuple(f.name for f in fields(declared))
        self._store_of = store_of

    def _check(self, keys: Iterable[str]) -> None:
        unknown = sorted(set(keys) - set(self.keys))
        if unknown:
            raise KeyError(f"{self.declared.__name__} declares no {', '.join(unknown)}")

    async def get(self, db: Database, owner_id: int) -> S:
        return self.declared.from_stored(await self._store_of(db).get(owner_id))

    async def set(self, db: Database, owner_id: int, values: dict[str, Any]) -> S:
        """Merge `values` in (None clears a key back to its default); returns the new settings."""
        self._check(values)
        return self.declared.from_stored(await self._store_of(db).update(owner_id, values))

    async def reset(self, db: Database, owner_id: int, keys: Iterable[str] | None = None) -> S:
        """Back to the defaults: the given keys, or every one."""
        if keys is not None:
            keys = list(keys)
            self._check(keys)
        return self.declared.from_stored(await self._store_of(db).reset(owner_id, keys))


GUILD = Scope(GuildSettings, lambda db: db.guilds)
MEMBER = Scope(MemberSettings, lambda db: db.users)
