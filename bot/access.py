"""Who may see what, and who may act on it, for Discord: the rule itself lives in storage/access.py (the web
gallery decides with it too); this adapter reads the viewer off an interaction and loads jobs for every
entry point (/job, every button, the gallery select and buttons, the context menu, /queue, /admin queue
cancel).

Job ids are sequential and printed under every result, so anything the viewer may not see behaves
exactly as a job that does not exist: same message, nothing revealed.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from bot.interaction import AtelierInteraction
from generation.errors import NotAllowed, NotFound
from storage.access import Owned, Viewer, can_act_on, can_see, gallery_scope

if TYPE_CHECKING:
    from storage.jobs import JobRow

__all__ = ["Owned", "Viewer", "can_act_on", "can_see", "does_not_exist", "gallery_scope", "is_moderator",
           "load_job", "require_owner_or_moderator", "viewer_of"]

def is_moderator(interaction: AtelierInteraction) -> bool:
    # Checked by the bot itself from the permissions Discord computed for this member here.
    perms = interaction.permissions
    return bool(interaction.guild_id) and (perms.manage_guild or perms.administrator)


def viewer_of(interaction: AtelierInteraction) -> Viewer:
    return Viewer(user_id=interaction.user.id, guild_id=interaction.guild_id,
                  moderator=is_moderator(interaction))


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
