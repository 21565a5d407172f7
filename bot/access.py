"""Who may see what, and who may act on it: the one rule every entry point uses (/job, every button, the
gallery select and buttons, the context menu, /queue, /admin queue cancel).

- A job made in a guild is seen only in that guild: by anyone there if it was made publicly, by its owner
  only if it was made in private mode.
- A job made in a DM (guild NULL) is seen by its owner only, and only in DMs: showing it in a server
  would carry it past that server's rules (banned words, NSFW policy) and to its members.
- Acting on a job someone else made (delete, cancel, remove from galleries) takes a moderator of the
  job's guild (Manage Server, checked by the bot itself); there are no moderators in DMs.

Job ids are sequential and printed under every result, so anything the viewer may not see behaves
exactly as a job that does not exist: same message, nothing revealed.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol

from bot.interaction import AtelierInteraction
from generation.errors import NotAllowed, NotFound

if TYPE_CHECKING:
    from storage.jobs import JobRow


class Owned(Protocol):
    """A job as stored (JobRow) or as queued (QueueEntry): whose, where, and whether private."""

    @property
    def user_id(self) -> int: ...
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


def is_moderator(interaction: AtelierInteraction) -> bool:
    # Checked by the bot itself from the permissions Discord computed for this member here.
    perms = interaction.permissions
    return bool(interaction.guild_id) and (perms.manage_guild or perms.administrator)


def viewer_of(interaction: AtelierInteraction) -> Viewer:
    return Viewer(user_id=interaction.user.id, guild_id=interaction.guild_id,
                  moderator=is_moderator(interaction))


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


def does_not_exist(job_id: int) -> NotFound:
    return NotFound(f"Job {job_id} does not exist here.")


async def load_job(interaction: AtelierInteraction, job_id: int, *, moderating: bool = False) -> JobRow:
    """The job if the viewer may see it, else NotFound (the same one as for a missing job).

    `moderating`: a moderator's tool (/admin queue cancel) reaches every job of their guild, private
    ones included, and never another guild's or a DM's."""
    viewer = viewer_of(interaction)
    job = await interaction.client.services.db.jobs.get(job_id)
    if job is None:
        raise does_not_exist(job_id)
    visible = can_act_on(job, viewer) if moderating else can_see(job, viewer)
    if not visible:
        raise does_not_exist(job_id)
    return job


def require_owner_or_moderator(interaction: AtelierInteraction, job: JobRow, what: str, *,
                               thing: str = "job") -> None:
    """Raise NotAllowed unless the viewer owns the job or moderates its guild; `what` names the action
    ("delete it", "cancel it"), `thing` what it is done to."""
    if not can_act_on(job, viewer_of(interaction)):
        raise NotAllowed(f"Only the {thing}'s owner or a moderator can {what}.")


def gallery_scope(viewer: Viewer, owner_id: int) -> bool | None:
    """How much of `owner_id`'s gallery the viewer may browse here: False = everything (their own),
    True = public images only (another member's, same guild), None = nothing (another user's, in a DM,
    where DM images are private to their owner)."""
    if owner_id == viewer.user_id:
        return False
    if viewer.guild_id is None:
        return None
    return True
