"""Who may see what: the one rule, with no Discord in it, so the bot (bot/access.py, the adapter that reads
a viewer off an interaction) and the web gallery (web/, a viewer from Discord OAuth2) decide alike.

- A job made in a guild is seen only in that guild: by anyone there if it was made publicly, by its owner
  only if it was made in private mode.
- A job made in a DM (guild NULL) is seen by its owner only, and only in DMs: showing it in a server
  would carry it past that server's rules (banned words, NSFW policy) and to its members.
- Acting on a job someone else made (delete, cancel, remove from galleries) takes a moderator of the
  job's guild (Manage Server, checked by the bot itself); there are no moderators in DMs.
- On the web a member stands in every guild they share with the bot at once, and in their own DMs: they
  see what they would see in any one of those places, and nothing else. Deleted images are gone.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import Protocol


class Owned(Protocol):
    """A job as stored (JobRow), as queued (QueueEntry), or one of its images: whose, where, whether
    private."""

    @property
    def user_id(self) -> int | None: ...
    @property
    def guild_id(self) -> int | None: ...
    @property
    def private(self) -> bool: ...


@dataclass(frozen=True)
class Viewer:
    """Who is asking, and where: the member (or DM user) behind an interaction."""

    user_id: int
    guild_id: int | None  # None in a DM
    moderator: bool = False


def can_see(job: Owned, viewer: Viewer) -> bool:
    """Whether the job exists for this viewer (see the module docstring)."""
    if job.guild_id != viewer.guild_id:
        return False  # other guilds' jobs, DM jobs in a guild, guild jobs in a DM
    if job.user_id == viewer.user_id:
        return True
    return job.guild_id is not None and not job.private


def can_act_on(job: Owned, viewer: Viewer) -> bool:
    """Whether the viewer may delete / cancel the job: its owner, or a moderator of the job's guild."""
    if job.guild_id != viewer.guild_id:
        return False
    return job.user_id == viewer.user_id or (viewer.moderator and job.guild_id is not None)


def gallery_scope(viewer: Viewer, owner_id: int) -> bool | None:
    """How much of `owner_id`'s gallery the viewer may browse here: False = everything (their own),
    True = public images only (another member's, same guild), None = nothing (another user's, in a DM,
    where DM images are private to their owner)."""
    if owner_id == viewer.user_id:
        return False
    if viewer.guild_id is None:
        return None
    return True


@dataclass(frozen=True)
class Member:
    """A web viewer: a Discord user and the guilds they share with the bot (from OAuth2 `guilds`)."""

    user_id: int
    guild_ids: frozenset[int] = field(default_factory=frozenset)

    @classmethod
    def of(cls, user_id: int, guild_ids: Iterable[int]) -> Member:
        return cls(user_id, frozenset(guild_ids))

    def places(self) -> Iterator[Viewer]:
        """The places this member stands in: each shared guild, and their DMs (as a member there, never
        a moderator: the web has no moderator tools)."""
        for guild_id in sorted(self.guild_ids):
            yield Viewer(self.user_id, guild_id)
        yield Viewer(self.user_id, None)

    def in_place(self, guild_id: int | None) -> Viewer | None:
        """The viewer in one place, or None when the member is not there (a guild they do not share)."""
        if guild_id is not None and guild_id not in self.guild_ids:
            return None
        return Viewer(self.user_id, guild_id)


def member_can_see(job: Owned, member: Member, *, deleted: bool = False) -> bool:
    """Whether a web member may see the job (or image): as in any place they stand; `deleted`: the image
    was deleted, so it is gone for everyone."""
    if deleted:
        return False
    viewer = member.in_place(job.guild_id)
    return viewer is not None and can_see(job, viewer)
