"""/lineage job: where a job came from and what was made from it, each step named by the action that
made it ("#12 /imagine → #15 U2 → #19 Zoom Out 2x"). Only jobs the viewer may see are named
(bot/access.py): a hidden ancestor shows as "…", a hidden child is left out with everything below it."""

from __future__ import annotations

import asyncio
import io
import logging
import re
from typing import Any

import discord
from discord import app_commands
from discord.ext import commands
from PIL import Image, ImageFilter, UnidentifiedImageError

from bot import results
from bot.access import can_see, load_job, viewer_of
from bot.interaction import AtelierInteraction
from bot.policy import channel_is_age_restricted
from bot.presenter import action_label, short_prompt
from bot.reply import reply
from generation.canvas import placed
from generation.errors import InvalidRequest, NotFound
from generation.lineage import Layout, Node, ZoomStep, family_png, layout, zoom_webp
from generation.request import Kind, RenderRequest
from storage.blobs import BlobStore
from storage.jobs import JobRow

log = logging.getLogger(__name__)

MAX_LINES = 25
MAX_CHARS = 1900
THUMB = 256
MAX_ZOOM_STEPS = 8  # the outermost ones of a longer chain: about 7 s of animation
# A thumbnail that cannot be read: its cell is a placeholder rather than an error.
BROKEN_IMAGE = (KeyError, OSError, SyntaxError, ValueError, UnidentifiedImageError)


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


def family_nodes(job: JobRow, ancestors: list[JobRow], descendants: list[JobRow], visible: set[int],
                 ) -> list[Node]:
    """The jobs to draw, the oldest visible ancestor first (the chain stops below a hidden one, as the
    text's "…"), then `job`, then its visible descendants (a hidden job's subtree is never reached)."""
    by_id = {j.id: j for j in [job, *ancestors, *descendants]}
    chain: list[JobRow] = []
    for row in ancestors:
        if row.id not in visible:
            break
        chain.append(row)
    drawn = [*reversed(chain), job, *(d for d in descendants if d.id in visible)]
    nodes = []
    for i, row in enumerate(drawn):
        parent = by_id.get(row.parent_job_id or 0)
        nodes.append(Node(row.id, None if i == 0 else row.parent_job_id, action_label(row, parent)))
    return nodes


def _picture(blobs: BlobStore, key: str, blur: bool) -> Image.Image | None:
    try:
        with Image.open(io.BytesIO(blobs.thumbnail(key, THUMB))) as im:
            im.load()
            image = im.convert("RGB")
    except BROKEN_IMAGE as exc:
        log.warning("blob %s cannot be drawn in a lineage: %r", key, exc)
        return None
    # A flagged image is blurred beyond recognition outside age-restricted channels (as the gallery does).
    return image.filter(ImageFilter.GaussianBlur(24)) if blur else image


async def _pictures(interaction: AtelierInteraction, rows: dict[int, JobRow], plan: Layout,
                    ) -> dict[int, Image.Image | None]:
    """Each drawn job's picture: its stored grid (what its message shows), else its first image; None
    (a placeholder) for a job without images yet or whose images were deleted."""
    services = interaction.client.services
    age_restricted = channel_is_age_restricted(interaction)
    keys: dict[int, tuple[str, bool]] = {}
    for job_id in plan.slots:
        images = [r for r in await services.db.images.for_job(job_id) if not r.deleted]
        if rows[job_id].status != "done" or not images:
            continue
        key = rows[job_id].grid_blob or min(images, key=lambda r: r.index).blob
        keys[job_id] = (key, any(r.nsfw for r in images) and not age_restricted)

    def load() -> dict[int, Image.Image | None]:
        return {job_id: _picture(services.blobs, key, blur) for job_id, (key, blur) in keys.items()}

    return await asyncio.to_thread(load)


def _options(nodes: list[Node], rows: dict[int, JobRow], plan: Layout) -> list[discord.SelectOption]:
    by_id = {n.job_id: n for n in nodes}
    return [
        discord.SelectOption(
            label=f"#{job_id} {by_id[job_id].label}"[:100], value=str(job_id),
            description=short_prompt(str(RenderRequest.from_json(rows[job_id].request).prompt))[:100] or None)
        for job_id in plan.slots
    ]


class OpenNode(discord.ui.DynamicItem[discord.ui.Select[Any]],
               template=r"atelier:lineage:open:(?P<job_id>[0-9]{1,19})"):
    """The /lineage menu: open any drawn job as /job shows it, only for the viewer. The chosen value comes
    from the client, so it goes through the same access rule as /job (a hidden job does not exist)."""

    def __init__(self, job_id: int, options: list[discord.SelectOption] | None = None) -> None:
        super().__init__(discord.ui.Select(
            placeholder="Open a job…", custom_id=f"atelier:lineage:open:{job_id}",
            options=options or [discord.SelectOption(label="-", value="0")]))
        self.job_id = job_id

    @classmethod
    async def from_custom_id(cls, interaction: discord.Interaction[Any], item: discord.ui.Item[Any],
                             match: re.Match[str], /) -> OpenNode:
        return cls(int(match["job_id"]))

    async def callback(self, interaction: discord.Interaction[Any]) -> None:
        from bot.errors import report_error

        try:
            data: dict[str, Any] = dict(interaction.data or {})
            values = data.get("values") or []
            chosen = str(values[0]) if values else ""
            if not chosen.isdigit() or not 0 < int(chosen) < 2**63:
                raise NotFound("Pick one of the jobs in the menu.")
            await results.show_job(interaction, int(chosen), ephemeral=True)
        except Exception as exc:
            await report_error(interaction, exc, job_id=self.job_id)


def _is_zoom(row: JobRow) -> bool:
    # `canvas` is inherited by a canvas job's children: only a canvas job made from one image is a Zoom Out
    # (a 🔄 of a zoom keeps the kind but has no image index).
    return (row.kind == Kind.CANVAS and row.parent_index is not None
            and RenderRequest.from_json(row.request).extra.get("canvas") == "zoom")


def zoom_chain(job: JobRow, ancestors: list[JobRow], visible: set[int]) -> list[tuple[JobRow, int]]:
    """The images of the nearest run of Zoom Outs at or above `job`, innermost first, each as (job, image
    index): the image each zoom was made from, then each zoom's image the next step (or `job`) used.
    Stops below a job the viewer may not see; empty when there is no Zoom Out to animate."""
    path = [job, *ancestors]
    start = next((i for i, row in enumerate(path) if _is_zoom(row)), None)
    if start is None or any(row.id not in visible for row in path[:start + 1]):
        return []
    chain = [(path[start], (path[start - 1].parent_index or 0) if start else 0)]
    i = start
    while _is_zoom(path[i]) and i + 1 < len(path) and path[i + 1].id in visible:
        chain.append((path[i + 1], path[i].parent_index or 0))
        i += 1
    return chain[::-1][-(MAX_ZOOM_STEPS + 1):] if len(chain) > 1 else []


async def _zoom_file(interaction: AtelierInteraction, chain: list[tuple[JobRow, int]], name: str,
                     ) -> discord.File:
    services = interaction.client.services
    rows = []
    for job, index in chain:
        image = await services.db.images.get_by_index(job.id, index)
        if image is None or image.deleted:
            raise NotFound(f"An image of job {job.id} is gone, so the zoom cannot be drawn.")
        rows.append((job, image))
    limit = results.guild_upload_limit(interaction.client, interaction.guild_id)

    def draw() -> bytes:
        inner = services.blobs.open_image(rows[0][1].blob)
        steps = []
        for job, image in rows[1:]:
            canvas = placed(RenderRequest.from_json(job.request))
            steps.append(ZoomStep(services.blobs.open_image(image.blob), (canvas.width, canvas.height),
                                  canvas.box))
        return zoom_webp(inner, steps, limit=limit)

    try:
        data = await asyncio.to_thread(draw)
    except BROKEN_IMAGE as exc:
        log.warning("infinite zoom of %s cannot be drawn: %r", name, exc)
        raise NotFound("An image of this zoom is missing or damaged, so it cannot be drawn.") from None
    spoiler = any(image.nsfw for _, image in rows) and not channel_is_age_restricted(interaction)
    return discord.File(io.BytesIO(data), filename=f"{name}.webp", spoiler=spoiler)


class ZoomButton(discord.ui.DynamicItem[discord.ui.Button[Any]],
                 template=r"atelier:lineage:zoom:(?P<job_id>[0-9]{1,19})"):
    """The infinite zoom of a job's chain of Zoom Outs, as an animated WebP only for the viewer. The chain
    is read again at the click, through the access rule (nothing hidden is drawn)."""

    def __init__(self, job_id: int) -> None:
        super().__init__(discord.ui.Button(label="Infinite zoom", emoji="🌀",
                                           style=discord.ButtonStyle.secondary,
                                           custom_id=f"atelier:lineage:zoom:{job_id}"))
        self.job_id = job_id

    @classmethod
    async def from_custom_id(cls, interaction: discord.Interaction[Any], item: discord.ui.Item[Any],
                             match: re.Match[str], /) -> ZoomButton:
        return cls(int(match["job_id"]))

    async def callback(self, interaction: discord.Interaction[Any]) -> None:
        from bot.errors import report_error

        try:
            row = await load_job(interaction, self.job_id)
            viewer = viewer_of(interaction)
            ancestors = await interaction.client.services.db.jobs.ancestors(row.id)
            chain = zoom_chain(row, ancestors, {j.id for j in [row, *ancestors] if can_see(j, viewer)})
            if not chain:
                raise InvalidRequest(f"Job {row.id} was not made by a Zoom Out.")
            await interaction.response.defer(ephemeral=True, thinking=True)  # frames take a few seconds
            file = await _zoom_file(interaction, chain, f"zoom_{row.id}")
            steps = len(chain) - 1
            text = (f"Infinite zoom of job {row.id}: {steps} Zoom Out{'s' if steps > 1 else ''}, "
                    f"from job {chain[0][0].id} outwards.")
            await reply(interaction, text, ephemeral=True, file=file)
        except Exception as exc:
            await report_error(interaction, exc, job_id=self.job_id)


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
        # 2. The picture: only visible jobs are drawn; the menu opens any of them.
        nodes = family_nodes(row, ancestors, descendants, visible)
        plan = layout(nodes)
        if plan.more:
            lines.append(f"The picture shows {len(plan.slots)} of them, and {plan.more} more not drawn.")
        rows = {j.id: j for j in [row, *ancestors, *descendants]}
        pictures = await _pictures(interaction, rows, plan)
        png = await asyncio.to_thread(family_png, nodes, pictures, plan)
        view = discord.ui.View(timeout=None)
        view.add_item(OpenNode(row.id, _options(nodes, rows, plan)))
        if zoom_chain(row, ancestors, visible):
            view.add_item(ZoomButton(row.id))
        await reply(interaction, "\n".join(lines)[:MAX_CHARS], ephemeral=True, view=view,
                    file=discord.File(io.BytesIO(png), filename=f"lineage_{row.id}.png"))


async def setup(bot: commands.Bot) -> None:
    await bot.add_cog(Lineage(bot))
    bot.add_dynamic_items(OpenNode, ZoomButton)
