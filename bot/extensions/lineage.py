"""/lineage job: where a job came from and what was made from it, each step named by the action that
made it ("#12 /imagine → #15 U2 → #19 Zoom Out 2x"). Only jobs the viewer may see are named
(bot/access.py): a hidden ancestor shows as "…", a hidden child is left out with everything below it."""

from __future__ import annotations

from discord import app_commands
from discord.ext import commands

from bot.access import can_see, load_job, viewer_of
from bot.interaction import AtelierInteraction
from bot.presenter import action_label
from bot.reply import reply
from storage.jobs import JobRow

MAX_LINES = 25
MAX_CHARS = 1900


def chain_text(job: JobRow, ancestors: list[JobRow], visible: set[int]) -> str:
    """Oldest first, up to the first ancestor the viewer may not see (shown as "…", never named)."""
    line = [job, *ancestors]
    shown: list[str] = []
    for i, node in enumerate(line):
        if node.id not in visible:
            shown.append("…")
            break
        parent = line[i + 1] if i + 1 < len(line) else None
        text = f"#{node.id} {action_label(node, parent)}"
        shown.append(f"**{text}**" if node is job else text)
    return " → ".join(reversed(shown))


def tree_lines(root: JobRow, descendants: list[JobRow], visible: set[int]) -> list[str]:
    """The visible jobs made from `root`, each under its parent, depth first."""
    by_id = {root.id: root, **{d.id: d for d in descendants}}
    children: dict[int, list[JobRow]] = {}
    for row in descendants:
        if row.parent_job_id is not None:
            children.setdefault(row.parent_job_id, []).append(row)
    lines: list[str] = []
    stack = [(child, 0) for child in reversed(children.get(root.id, []))]
    while stack:
        node, depth = stack.pop()
        if node.id not in visible:
            continue  # and none of its own: they hang from a job the viewer cannot see
        parent = by_id.get(node.parent_job_id or 0)
        lines.append(f"{'  ' * depth}• #{node.id} {action_label(node, parent)}")
        stack += [(child, depth + 1) for child in reversed(children.get(node.id, []))]
    return lines


class Lineage(commands.Cog):
    def __init__(self, bot: commands.Bot) -> None:
        self.bot = bot

    @app_commands.command(name="lineage", description="Where a job came from and what was made from it")
    @app_commands.describe(job="The job's number (shown under its result)")
    async def lineage(self, interaction: AtelierInteraction, job: app_commands.Range[int, 1]) -> None:
        db = interaction.client.services.db
        row = await load_job(interaction, job)  # "does not exist" for a job the viewer may not see
        viewer = viewer_of(interaction)
        ancestors = await db.jobs.ancestors(row.id)
        descendants = await db.jobs.descendants(row.id)
        visible = {j.id for j in [row, *ancestors, *descendants] if can_see(j, viewer)}
        lines = [f"**Lineage of job {row.id}**", chain_text(row, ancestors, visible)]
        below = tree_lines(row, descendants, visible)
        if below:
            lines.append("Made from it:")
            lines += below[:MAX_LINES]
            if len(below) > MAX_LINES:
                lines.append(f"… and {len(below) - MAX_LINES} more")
        else:
            lines.append("Nothing was made from it yet.")
        await reply(interaction, "\n".join(lines)[:MAX_CHARS], ephemeral=True)


async def setup(bot: commands.Bot) -> None:
    await bot.add_cog(Lineage(bot))
