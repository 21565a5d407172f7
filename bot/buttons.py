"""Persistent buttons about one job: custom_id `atelier:<action>:<job_id>[:<index>]`, parsed by a
DynamicItem, so a button works after a restart and for jobs of any age. A button holds no state: each
click reads the job from the database.

Every action is an `Action`; each family of actions is one DynamicItem class whose template matches
only its own actions and whose callback does the work: first the access rule (bot/access.py), then the
action (discord.py's examples/views/dynamic_counter.py). To follow a click, read its action in the
custom_id, find it in `Action`, then the class whose `ACTIONS` holds it.

The rows of buttons under a result (grid or single image, from delivery, /job and /gallery) are built
here too, by `result_view` and `image_view`.
"""

from __future__ import annotations

import asyncio
import dataclasses
import enum
import io
import random
import re
from typing import Any, ClassVar

import discord

from bot import presenter
from bot.access import can_see, load_job, require_owner_or_moderator, viewer_of
from bot.attachments import PENDING_UPLOAD, check_declared, fetch
from bot.defaults import member_settings
from bot.errors import report_error
from bot.interaction import AtelierInteraction
from bot.jobflow import start_job
from bot.policy import check_request
from bot.references import plan_references
from bot.reply import reply
from generation.canvas import (
    ALL_CELLS,
    GRID,
    MAX_FEATHER,
    MAX_ZOOM,
    MIN_ZOOM,
    PRESETS,
    CanvasAction,
    canvas_of,
    selection_thumbnail,
)
from generation.errors import InvalidRequest, NotFound
from generation.masks import encode_mask, read_mask
from generation.request import Kind, RenderRequest
from generation.validate import RequestDraft, build_request, upscale_of, variation_of

SEED_MAX = 2**32 - 1


class Action(enum.StrEnum):
    """What a button does; the value is its spelling in custom_ids."""

    UPSCALE = "up"
    VARY = "vary"  # V1-V4 under a grid: a strong variation, as Midjourney's default
    SUBTLE = "subtle"
    STRONG = "strong"
    REROLL = "reroll"
    REMIX = "remix"
    DETAILS = "info"
    FAVOURITE = "fav"
    DELETE = "delete"
    CANCEL = "cancel"
    ZOOM_2X = "zoom2"
    ZOOM_15X = "zoom15"
    CUSTOM_ZOOM = "zoomc"
    SQUARE = "square"
    PAN_LEFT = "panl"
    PAN_RIGHT = "panr"
    PAN_UP = "panu"
    PAN_DOWN = "pand"
    REGION = "region"  # Vary (Region): opens the editor (its own controls are RegionControl / RegionPreset)
    REGION_PRESET = "rgp"


# Spellings that buttons on older messages still carry, and the action each means now. The gallery's
# 🗑 was "rm" before it became the one DELETE.
OLD_SPELLINGS: dict[str, Action] = {"rm": Action.DELETE}


def parse_action(spelling: str) -> Action:
    return OLD_SPELLINGS.get(spelling) or Action(spelling)


def custom_id(action: Action, job_id: int, index: int | None = None) -> str:
    cid = f"atelier:{action}:{job_id}" if index is None else f"atelier:{action}:{job_id}:{index}"
    assert len(cid) <= 100, cid  # Discord's limit; our ids are far below it
    return cid


def _template(actions: tuple[Action, ...]) -> str:
    spellings = [*(a.value for a in actions), *(old for old, a in OLD_SPELLINGS.items() if a in actions)]
    return (rf"atelier:(?P<action>{'|'.join(spellings)})"
            r":(?P<job_id>[0-9]{1,19})(?::(?P<index>[0-9]{1,3}))?")


class Acting:
    """A persistent control's callback: run `act`, and turn any error into the one short reply (naming the
    job, for controls that belong to one)."""

    job_id: int | None = None

    async def callback(self, interaction: discord.Interaction[Any]) -> None:
        try:
            await self.act(interaction)
        except Exception as exc:
            await report_error(interaction, exc, job_id=self.job_id)

    async def act(self, interaction: AtelierInteraction) -> None:
        raise NotImplementedError


class JobButton(Acting, discord.ui.DynamicItem[discord.ui.Button[Any]], template=_template(tuple(Action))):
    """What every job button shares: the custom_id and its parsing. Never shown or registered itself
    (its template matches every action, so a click would run twice): the families below are."""

    ACTIONS: ClassVar[tuple[Action, ...]] = ()
    job_id: int

    def __init__(self, action: Action, job_id: int, index: int | None = None, *, label: str | None = None,
                 emoji: str | discord.PartialEmoji | None = None,
                 style: discord.ButtonStyle = discord.ButtonStyle.secondary, row: int | None = None,
                 disabled: bool = False) -> None:
        assert action in self.ACTIONS, (type(self).__name__, action)
        super().__init__(
            discord.ui.Button(label=label, emoji=emoji, style=style, row=row, disabled=disabled,
                              custom_id=custom_id(action, job_id, index))
        )
        self.action = action
        self.job_id = job_id
        self.index = index

    @classmethod
    async def from_custom_id(cls, interaction: discord.Interaction[Any], item: discord.ui.Item[Any],
                             match: re.Match[str], /) -> JobButton:
        assert isinstance(item, discord.ui.Button)
        index = match["index"]
        return cls(parse_action(match["action"]), int(match["job_id"]), None if index is None else int(index),
                   label=item.label, emoji=item.emoji, style=item.style, row=item.row)


# -- new jobs from this one --------------------------------------------------------------------------

async def _source_of(interaction: AtelierInteraction, job_id: int, index: int | None) -> tuple[Any, str]:
    job = await load_job(interaction, job_id)
    if job.status != "done":
        raise InvalidRequest(f"Job {job_id} has no images yet.")
    rows = {row.index: row for row in await interaction.client.services.db.images.for_job(job_id)}
    row = rows.get(index or 0)
    if row is None or row.deleted:
        raise NotFound("That image is gone.")
    return job, row.blob


def reseeded(request: RenderRequest) -> RenderRequest:
    first = random.randint(0, SEED_MAX - request.count)
    return dataclasses.replace(request, seeds=tuple(first + i for i in range(request.count)))


class RenderButton(JobButton, template=_template((Action.UPSCALE, Action.VARY, Action.SUBTLE, Action.STRONG,
                                                  Action.REROLL))):
    """U1-U4 / Upscale, V1-V4 / Vary (Subtle) / Vary (Strong), and 🔄: a new job made from this one, owned
    by the member who clicked. Anyone who can see the job may click (load_job)."""

    ACTIONS = (Action.UPSCALE, Action.VARY, Action.SUBTLE, Action.STRONG, Action.REROLL)

    async def act(self, interaction: AtelierInteraction) -> None:
        job_id, index = self.job_id, self.index
        if self.action == Action.REROLL:
            job = await load_job(interaction, job_id)
            await start_job(interaction, reseeded(RenderRequest.from_json(job.request)), parent_job_id=job_id)
            return
        job, blob = await _source_of(interaction, job_id, index)
        parent = RenderRequest.from_json(job.request)
        if self.action == Action.UPSCALE:
            # The cap is the parent model's own: Upscale → Vary → Upscale must not ask SD1.5 for 2048².
            family = interaction.client.services.registry.spec(parent.model).family
            request = upscale_of(parent, index or 0, source=blob, family=family)
        else:
            request = variation_of(parent, index or 0, strong=self.action != Action.SUBTLE, source=blob)
        await start_job(interaction, request, parent_job_id=job_id, parent_index=index or 0)


class RemixModal(discord.ui.Modal, title="Remix prompt"):
    def __init__(self, job_id: int, request: RenderRequest) -> None:
        super().__init__(timeout=15 * 60, custom_id=f"atelier:remixmodal:{job_id}")
        self.job_id = job_id
        self.request = request
        self.prompt: discord.ui.TextInput[RemixModal] = discord.ui.TextInput(
            label="Prompt", style=discord.TextStyle.paragraph, default=request.prompt[:4000], max_length=4000,
            custom_id="prompt")
        self.negative: discord.ui.TextInput[RemixModal] = discord.ui.TextInput(
            label="Negative prompt", required=False, default=request.negative[:4000] or None,
            max_length=4000, custom_id="negative")
        self.add_item(self.prompt)
        self.add_item(self.negative)

    async def on_submit(self, interaction: discord.Interaction[Any]) -> None:
        services = interaction.client.services
        parent = self.request
        # The edited prompt may carry flags again; everything else follows the parent job.
        draft = RequestDraft(prompt=self.prompt.value, negative=self.negative.value or None,
                             steps=parent.steps, guidance=parent.guidance, sampler=parent.sampler,
                             model=parent.model, count=parent.count)
        # Images the edited prompt names (--sref ...) are fetched and checked; without any, the parent's
        # references (and their weights) carry over, as its size does.
        draft = await plan_references(interaction, draft, {})
        request = build_request(draft, services.registry)
        if "--ar" not in self.prompt.value and parent.kind == Kind.TXT2IMG:
            request = dataclasses.replace(request, width=parent.width, height=parent.height)
        if not draft.references and parent.references:
            request = dataclasses.replace(request, references=parent.references)
        await start_job(interaction, request, parent_job_id=self.job_id)

    async def on_error(  # type: ignore[override]  # Modal's own signature has no item argument
            self, interaction: discord.Interaction[Any], error: Exception, /) -> None:
        await report_error(interaction, error, job_id=self.job_id)


class RemixButton(JobButton, template=_template((Action.REMIX,))):
    """🖋: the job's prompt in a modal; its submission starts the edited job."""

    ACTIONS = (Action.REMIX,)

    async def act(self, interaction: AtelierInteraction) -> None:
        job = await load_job(interaction, self.job_id)
        await interaction.response.send_modal(RemixModal(self.job_id, RenderRequest.from_json(job.request)))


# -- canvas actions: a new job that paints around (or over part of) this image ----------------------

# Each canvas button's action in generation/canvas.py, and its zoom.
_CANVAS: dict[Action, tuple[CanvasAction, float]] = {
    Action.ZOOM_2X: (CanvasAction.ZOOM, 2.0),
    Action.ZOOM_15X: (CanvasAction.ZOOM, 1.5),
    Action.SQUARE: (CanvasAction.SQUARE, 1.0),
    Action.PAN_LEFT: (CanvasAction.PAN_LEFT, 1.0),
    Action.PAN_RIGHT: (CanvasAction.PAN_RIGHT, 1.0),
    Action.PAN_UP: (CanvasAction.PAN_UP, 1.0),
    Action.PAN_DOWN: (CanvasAction.PAN_DOWN, 1.0),
}
PANS: tuple[tuple[Action, str], ...] = ((Action.PAN_LEFT, "⬅️"), (Action.PAN_RIGHT, "➡️"), (Action.PAN_UP, "⬆️"),
                                        (Action.PAN_DOWN, "⬇️"))


async def start_canvas(interaction: AtelierInteraction, job_id: int, index: int, action: CanvasAction | None,
                       *, zoom: float = 2.0, aspect: str | None = None, prompt: str | None = None,
                       cells: int | None = None) -> None:
    """A canvas job on image `index` of job `job_id` (`action` None with `cells`: Vary (Region)): a grid
    of the member's default count (4 unless they chose otherwise), the parent recorded."""
    job, blob = await _source_of(interaction, job_id, index)
    parent = RenderRequest.from_json(job.request)
    family = interaction.client.services.registry.spec(parent.model).family
    count = (await member_settings(interaction)).defaults().get("count") or 4
    request = canvas_of(parent, index, blob, action, family=family, zoom=zoom, aspect=aspect, prompt=prompt,
                        cells=cells, count=int(count))
    await start_job(interaction, request, parent_job_id=job_id, parent_index=index)


async def start_masked_region(interaction: AtelierInteraction, job_id: int, index: int | None,
                              attachment: discord.Attachment, prompt: str | None = None,
                              feather: int = 0) -> None:
    """Vary (Region) with the member's own mask (generation/masks.py) on image `index` of job `job_id`
    (None: its only image). As an upload (bot/attachments.py): every check runs before the download,
    the mask is read against the image's size, and only a mask that passed is stored. `feather`: pixels
    over which the repainted area fades into the kept one."""
    services = interaction.client.services
    if not 0 <= feather <= MAX_FEATHER:
        raise InvalidRequest(f"Feather goes from 0 to {MAX_FEATHER} pixels.")
    # 1. What Discord says about the file; the image (who may see it, and that it still exists).
    check_declared(attachment)
    job, blob = await _source_of(interaction, job_id, index)
    parent = RenderRequest.from_json(job.request)
    if index is None and parent.count > 1:
        raise InvalidRequest(f"Job {job_id} has {parent.count} images: name one, e.g. `{job_id}.1`.")
    index = index or 0
    # 2. The request as it will be, checked (ban, channel, words, caps) before a byte is downloaded.
    family = services.registry.spec(parent.model).family
    count = (await member_settings(interaction)).defaults().get("count") or 4
    planned = canvas_of(parent, index, blob, None, family=family, prompt=prompt, count=int(count),
                        mask=PENDING_UPLOAD)
    await check_request(services, interaction, planned)
    # 3. Download, read (header first) and threshold at the image's size, off the loop; then store.
    data = await fetch(attachment)
    mask = await asyncio.to_thread(read_mask, data, (parent.width, parent.height))
    key = await asyncio.to_thread(services.blobs.put, encode_mask(mask))
    request = dataclasses.replace(planned, mask=key, feather=feather)
    await start_job(interaction, request, parent_job_id=job_id, parent_index=index)


class CustomZoomModal(discord.ui.Modal, title="Custom Zoom"):
    """The prompt, a zoom from 1 to 2 and an optional new aspect for a Zoom Out."""

    def __init__(self, job_id: int, index: int, request: RenderRequest) -> None:
        super().__init__(timeout=15 * 60, custom_id=f"atelier:zoommodal:{job_id}:{index}")
        self.job_id, self.index = job_id, index
        self.prompt: discord.ui.TextInput[CustomZoomModal] = discord.ui.TextInput(
            label="Prompt", style=discord.TextStyle.paragraph, default=request.prompt[:4000], max_length=4000,
            custom_id="prompt")
        self.zoom: discord.ui.TextInput[CustomZoomModal] = discord.ui.TextInput(
            label=f"Zoom ({MIN_ZOOM:g} to {MAX_ZOOM:g})", default="2", max_length=8, custom_id="zoom")
        self.aspect: discord.ui.TextInput[CustomZoomModal] = discord.ui.TextInput(
            label="New aspect (W:H, empty keeps it)", required=False, max_length=9, custom_id="aspect")
        for item in (self.prompt, self.zoom, self.aspect):
            self.add_item(item)

    async def on_submit(self, interaction: discord.Interaction[Any]) -> None:
        try:
            zoom = float(self.zoom.value.strip().lower().removesuffix("x"))
        except ValueError:
            raise InvalidRequest(f"Zoom is a number from {MIN_ZOOM:g} to {MAX_ZOOM:g}, e.g. 1.5.") from None
        aspect = self.aspect.value.strip() or None
        await start_canvas(interaction, self.job_id, self.index, CanvasAction.ZOOM, zoom=zoom, aspect=aspect,
                           prompt=self.prompt.value)

    async def on_error(  # type: ignore[override]  # Modal's own signature has no item argument
            self, interaction: discord.Interaction[Any], error: Exception, /) -> None:
        await report_error(interaction, error, job_id=self.job_id)


class CanvasButton(JobButton, template=_template((*_CANVAS, Action.CUSTOM_ZOOM, Action.REGION))):
    """Zoom Out 2x / 1.5x, Custom Zoom (a modal), Make Square and the four pans, on one image: a new job
    painting the canvas around it (generation/canvas.py), owned by the member who clicked. Vary (Region)
    opens its editor (below)."""

    ACTIONS = (*_CANVAS, Action.CUSTOM_ZOOM, Action.REGION)

    async def act(self, interaction: AtelierInteraction) -> None:
        index = self.index or 0
        if self.action == Action.REGION:
            await _source_of(interaction, self.job_id, index)  # who may see it, and that it still exists
            await show_region_editor(interaction, self.job_id, index, 0, edit=False)
            return
        if self.action == Action.CUSTOM_ZOOM:
            job, _ = await _source_of(interaction, self.job_id, index)
            await interaction.response.send_modal(
                CustomZoomModal(self.job_id, index, RenderRequest.from_json(job.request)))
            return
        action, zoom = _CANVAS[self.action]
        await start_canvas(interaction, self.job_id, index, action, zoom=zoom)


# -- Vary (Region): an ephemeral editor inside Discord ---------------------------------------------------
# Components V2 (a LayoutView) holds the image, a 4x4 grid of cell toggles, Invert / Clear / Submit / 🖋 and
# the presets menu: 29 components of the 40 allowed. The selection lives in every control's custom_id
# (`atelier:rg:<job>:<index>:<cells>:<op>`), so the editor keeps working after a restart.

REGION_FILE = "region.png"


def _region_id(job_id: int, index: int, cells: int, op: str) -> str:
    cid = f"atelier:rg:{job_id}:{index}:{cells}:{op}"
    assert len(cid) <= 100, cid
    return cid


async def show_region_editor(interaction: AtelierInteraction, job_id: int, index: int, cells: int, *,
                             edit: bool) -> None:
    """The editor for image `index` of job `job_id` with `cells` selected: a new ephemeral message, or
    (`edit`) the clicked editor redrawn with its thumbnail."""
    _, blob = await _source_of(interaction, job_id, index)
    blobs = interaction.client.services.blobs

    def draw() -> bytes:
        from PIL import Image

        with Image.open(io.BytesIO(blobs.read(blob))) as source:
            thumb = selection_thumbnail(source, cells)
        buf = io.BytesIO()
        thumb.save(buf, format="PNG")
        return buf.getvalue()

    file = discord.File(io.BytesIO(await asyncio.to_thread(draw)), filename=REGION_FILE)
    view = region_view(job_id, index, cells)
    if edit:
        await interaction.response.edit_message(view=view, attachments=[file])
    else:
        await interaction.response.send_message(view=view, file=file, ephemeral=True)


def region_view(job_id: int, index: int, cells: int) -> discord.ui.LayoutView:
    chosen = bin(cells).count("1")
    layout = discord.ui.LayoutView(timeout=None)
    box: discord.ui.Container[Any] = discord.ui.Container()
    box.add_item(discord.ui.TextDisplay(
        f"**Vary (Region)** · job `{job_id}` · image {index + 1}: pick the parts to repaint "
        f"({chosen} of {GRID * GRID} selected).\n-# Or repaint with your own mask (white = repaint, black "
        f"= keep; or transparent = repaint): `/region job:{job_id}.{index + 1} mask:<file>`"))
    box.add_item(discord.ui.MediaGallery(discord.MediaGalleryItem(f"attachment://{REGION_FILE}")))
    for row in range(GRID):
        line: discord.ui.ActionRow[Any] = discord.ui.ActionRow()
        for col in range(GRID):
            cell = row * GRID + col
            on = bool(cells >> cell & 1)
            style = discord.ButtonStyle.primary if on else discord.ButtonStyle.secondary
            label = "■" if on else "□"
            line.add_item(RegionControl(job_id, index, cells, f"t{cell}", label=label, style=style))
        box.add_item(line)
    controls: discord.ui.ActionRow[Any] = discord.ui.ActionRow()
    controls.add_item(RegionControl(job_id, index, cells, "inv", label="Invert"))
    controls.add_item(RegionControl(job_id, index, cells, "clr", label="Clear", disabled=not cells))
    controls.add_item(RegionControl(job_id, index, cells, "go", label="Submit", disabled=not cells,
                                    style=discord.ButtonStyle.success))
    controls.add_item(RegionControl(job_id, index, cells, "mix", label="Submit with prompt", emoji="🖋",
                                    disabled=not cells))
    box.add_item(controls)
    presets: discord.ui.ActionRow[Any] = discord.ui.ActionRow()
    presets.add_item(RegionPreset(job_id, index))
    box.add_item(presets)
    layout.add_item(box)
    return layout


class RegionRemixModal(discord.ui.Modal, title="Vary (Region)"):
    """The prompt for the repainted region."""

    def __init__(self, job_id: int, index: int, cells: int, request: RenderRequest) -> None:
        super().__init__(timeout=15 * 60, custom_id=f"atelier:rgmodal:{job_id}:{index}:{cells}")
        self.job_id, self.index, self.cells = job_id, index, cells
        self.prompt: discord.ui.TextInput[RegionRemixModal] = discord.ui.TextInput(
            label="Prompt for the region", style=discord.TextStyle.paragraph, default=request.prompt[:4000],
            max_length=4000, custom_id="prompt")
        self.add_item(self.prompt)

    async def on_submit(self, interaction: discord.Interaction[Any]) -> None:
        await start_canvas(interaction, self.job_id, self.index, None, cells=self.cells,
                           prompt=self.prompt.value)

    async def on_error(  # type: ignore[override]  # Modal's own signature has no item argument
            self, interaction: discord.Interaction[Any], error: Exception, /) -> None:
        await report_error(interaction, error, job_id=self.job_id)


class RegionControl(Acting, discord.ui.DynamicItem[discord.ui.Button[Any]],
                    template=r"atelier:rg:(?P<job_id>[0-9]{1,19}):(?P<index>[0-9]{1,3}):(?P<cells>[0-9]{1,5})"
                             r":(?P<op>t[0-9]{1,2}|inv|clr|go|mix)"):
    """A cell toggle, Invert, Clear, Submit or 🖋 of the Vary (Region) editor; the selection before the
    click is in the custom_id."""

    job_id: int

    def __init__(self, job_id: int, index: int, cells: int, op: str, *, label: str | None = None,
                 emoji: str | None = None, style: discord.ButtonStyle = discord.ButtonStyle.secondary,
                 disabled: bool = False) -> None:
        super().__init__(discord.ui.Button(label=label, emoji=emoji, style=style, disabled=disabled,
                                           custom_id=_region_id(job_id, index, cells, op)))
        self.job_id, self.index, self.cells, self.op = job_id, index, cells & ALL_CELLS, op

    @classmethod
    async def from_custom_id(cls, interaction: discord.Interaction[Any], item: discord.ui.Item[Any],
                             match: re.Match[str], /) -> RegionControl:
        return cls(int(match["job_id"]), int(match["index"]), int(match["cells"]), match["op"])

    async def act(self, interaction: AtelierInteraction) -> None:
        if self.op == "go":
            await start_canvas(interaction, self.job_id, self.index, None, cells=self.cells)
            return
        if self.op == "mix":
            job = await load_job(interaction, self.job_id)
            await interaction.response.send_modal(
                RegionRemixModal(self.job_id, self.index, self.cells, RenderRequest.from_json(job.request)))
            return
        if self.op == "inv":
            cells = ALL_CELLS & ~self.cells
        elif self.op == "clr":
            cells = 0
        else:
            cell = int(self.op[1:])
            if not 0 <= cell < GRID * GRID:
                raise InvalidRequest("There is no such cell.")
            cells = self.cells ^ (1 << cell)
        await show_region_editor(interaction, self.job_id, self.index, cells, edit=True)


class RegionPreset(Acting, discord.ui.DynamicItem[discord.ui.Select[Any]],
                   template=r"atelier:rgp:(?P<job_id>[0-9]{1,19}):(?P<index>[0-9]{1,3})"):
    """The editor's presets menu: a named selection replaces the current one."""

    job_id: int

    def __init__(self, job_id: int, index: int) -> None:
        super().__init__(discord.ui.Select(
            placeholder="Presets", custom_id=f"atelier:{Action.REGION_PRESET}:{job_id}:{index}",
            options=[discord.SelectOption(label=name.capitalize(), value=name) for name in PRESETS]))
        self.job_id, self.index = job_id, index

    @classmethod
    async def from_custom_id(cls, interaction: discord.Interaction[Any], item: discord.ui.Item[Any],
                             match: re.Match[str], /) -> RegionPreset:
        return cls(int(match["job_id"]), int(match["index"]))

    async def act(self, interaction: AtelierInteraction) -> None:
        values = self.item.values  # filled from the interaction before the callback
        cells = PRESETS.get(values[0] if values else "")
        if cells is None:
            raise InvalidRequest("Pick one of the presets.")
        await show_region_editor(interaction, self.job_id, self.index, cells, edit=True)


# -- about this job ----------------------------------------------------------------------------------

async def _made_from(interaction: AtelierInteraction, job: Any) -> str:
    """The parent job and the action that made this one ("job 12 · U2"); a parent the viewer may not see
    is never named, only the action is."""
    parent = await interaction.client.services.db.jobs.get(job.parent_job_id)
    if parent is None or not can_see(parent, viewer_of(interaction)):
        return "a job not shown here"
    return f"job {parent.id} · {presenter.action_label(job, parent)}"


class DetailsButton(JobButton, template=_template((Action.DETAILS,))):
    """Details: the whole prompt and settings, ephemeral."""

    ACTIONS = (Action.DETAILS,)

    async def act(self, interaction: AtelierInteraction) -> None:
        job = await load_job(interaction, self.job_id)
        extra = {"By": f"<@{job.user_id}>", "Status": job.status}
        if job.parent_job_id is not None:
            extra["Made from"] = await _made_from(interaction, job)
        embed = presenter.details(self.job_id, RenderRequest.from_json(job.request), extra)
        await reply(interaction, embed=embed, ephemeral=True)


class FavouriteButton(JobButton, template=_template((Action.FAVOURITE,))):
    """⭐ toggles the clicker's favourite: one image (from the gallery) or the whole job (under a result).
    Anyone who can see the job may star it (load_job hides others' private jobs); stars are per member
    and are what `/gallery favourites` lists."""

    ACTIONS = (Action.FAVOURITE,)

    async def act(self, interaction: AtelierInteraction) -> None:
        job_id, index = self.job_id, self.index
        await load_job(interaction, job_id)
        images = interaction.client.services.db.images
        rows = [r for r in await images.for_job(job_id) if index is None or r.index == index]
        if not rows:
            raise NotFound("That image is gone.")
        favourite = await images.toggle_favourite(interaction.user.id, [r.id for r in rows])
        what = f"Image {rows[0].index + 1} of job {job_id}" if index is not None else f"Job {job_id}"
        await reply(interaction, f"{what} {'added to' if favourite else 'removed from'} your favourites.",
                    ephemeral=True)


class DeleteButton(JobButton, template=_template((Action.DELETE,))):
    """🗑: the owner or a moderator removes images from galleries. Without an index (under a result) the
    whole job goes and so does its message; with one (an image opened from the gallery) that image goes
    and its message says so. A moderator's delete is audited as "image.delete"."""

    ACTIONS = (Action.DELETE,)

    async def act(self, interaction: AtelierInteraction) -> None:
        job_id, index = self.job_id, self.index
        job = await load_job(interaction, job_id)
        require_owner_or_moderator(interaction, job, "delete it", thing="job" if index is None else "image")
        images = interaction.client.services.db.images
        if index is None:
            removed = await images.set_deleted_for_job(job_id)
        else:
            row = await images.get_by_index(job_id, index)
            removed = int(row is not None and await images.set_deleted(row.id))
        if interaction.user.id != job.user_id:
            await interaction.client.services.db.audit.record(
                job.guild_id, interaction.user.id, "image.delete",
                f"job:{job_id}" + ("" if index is None else f":{index}"), {"owner": job.user_id})
        if index is None:
            if interaction.message is not None:
                try:
                    await interaction.message.delete()
                except discord.NotFound:
                    pass
            await reply(interaction, f"Deleted job {job_id}.", ephemeral=True)
            return
        text = "Deleted." if removed else "Already deleted."
        if interaction.message is not None and not interaction.response.is_done():
            await interaction.response.edit_message(content=text, attachments=[], view=None)
        else:
            await reply(interaction, text, ephemeral=True)


class CancelButton(JobButton, template=_template((Action.CANCEL,))):
    """Cancel (in /queue): the owner or a moderator stops a queued or running job."""

    ACTIONS = (Action.CANCEL,)

    async def act(self, interaction: AtelierInteraction) -> None:
        job = await load_job(interaction, self.job_id)
        require_owner_or_moderator(interaction, job, "cancel it")
        cancelled = await interaction.client.services.scheduler.cancel(self.job_id)
        text = f"Job {self.job_id} cancelled." if cancelled else f"Job {self.job_id} already finished."
        await reply(interaction, text, ephemeral=True)


_KNOWN = "|".join([*(a.value for a in Action), *OLD_SPELLINGS])


class RetiredButton(discord.ui.DynamicItem[discord.ui.Button[Any]],
                    template=rf"atelier:(?!(?:{_KNOWN}):)[a-z]+:[0-9]{{1,19}}(?::[0-9]{{1,3}})?"):
    """A job button whose action no longer exists, on an old message: the member is told so instead of
    Discord's bare "This interaction failed"."""

    def __init__(self, cid: str) -> None:
        super().__init__(discord.ui.Button(custom_id=cid))

    @classmethod
    async def from_custom_id(cls, interaction: discord.Interaction[Any], item: discord.ui.Item[Any],
                             match: re.Match[str], /) -> RetiredButton:
        return cls(match.string)

    async def callback(self, interaction: discord.Interaction[Any]) -> None:
        await report_error(interaction, NotFound("That button is no longer supported."))


# What the client registers: one class per family, templates that never overlap.
FAMILIES: tuple[type[discord.ui.DynamicItem[Any]], ...] = (
    RenderButton, RemixButton, CanvasButton, RegionControl, RegionPreset, DetailsButton, FavouriteButton,
    DeleteButton, CancelButton, RetiredButton)


# -- rows under a result -----------------------------------------------------------------------------

def result_view(job_id: int, count: int, kind: Kind, size: tuple[int, int] | None = None) -> discord.ui.View:
    """The buttons under a result. Grids: U1-U4, V1-V4, reroll, remix; single images: as image_view.
    Upscaled results keep the vary buttons but cannot be upscaled again (the size would leave the
    model's range)."""
    if count <= 1:
        return image_view(job_id, kind, size=size)
    view = discord.ui.View(timeout=None)
    grey = discord.ButtonStyle.secondary
    for i in range(count):
        view.add_item(RenderButton(Action.UPSCALE, job_id, i, label=f"U{i + 1}", style=grey, row=0))
    view.add_item(RenderButton(Action.REROLL, job_id, emoji="🔄", style=grey, row=0))
    for i in range(count):
        view.add_item(RenderButton(Action.VARY, job_id, i, label=f"V{i + 1}", style=grey, row=1))
    view.add_item(RemixButton(Action.REMIX, job_id, emoji="🖋", style=grey, row=1))
    _add_controls(view, job_id, None, row=2)
    return view


def image_view(job_id: int, kind: Kind, index: int | None = None, *,
               size: tuple[int, int] | None = None) -> discord.ui.View:
    """One image: Upscale (not for an upscale), Vary (Subtle), Vary (Strong), reroll, remix, then Details,
    ⭐ and 🗑, then the canvas actions (Make Square when `size` is known and not square). `index` None: a
    single-image job's result (⭐ and 🗑 act on the job); a number: that image of its job, opened from the
    gallery."""
    view = discord.ui.View(timeout=None)
    grey = discord.ButtonStyle.secondary
    at = index or 0
    if kind != Kind.UPSCALE:
        view.add_item(RenderButton(Action.UPSCALE, job_id, at, label="Upscale",
                                   style=discord.ButtonStyle.primary, row=0))
    view.add_item(RenderButton(Action.SUBTLE, job_id, at, label="Vary (Subtle)", style=grey, row=0))
    view.add_item(RenderButton(Action.STRONG, job_id, at, label="Vary (Strong)", style=grey, row=0))
    view.add_item(RenderButton(Action.REROLL, job_id, emoji="🔄", style=grey, row=0))
    view.add_item(RemixButton(Action.REMIX, job_id, emoji="🖋", style=grey, row=0))
    _add_controls(view, job_id, index, row=1)
    _add_canvas(view, job_id, at, size)
    return view


def _add_canvas(view: discord.ui.View, job_id: int, index: int, size: tuple[int, int] | None) -> None:
    # Rows 2 and 3: Discord allows 5 rows of 5 buttons, and rows 0 and 1 hold the render actions.
    grey = discord.ButtonStyle.secondary
    view.add_item(CanvasButton(Action.ZOOM_2X, job_id, index, label="Zoom Out 2x", emoji="🔍", style=grey,
                               row=2))
    view.add_item(CanvasButton(Action.ZOOM_15X, job_id, index, label="Zoom Out 1.5x", emoji="🔍", style=grey,
                               row=2))
    view.add_item(CanvasButton(Action.CUSTOM_ZOOM, job_id, index, label="Custom Zoom", style=grey, row=2))
    if size is not None and size[0] != size[1]:
        view.add_item(CanvasButton(Action.SQUARE, job_id, index, label="Make Square", emoji="↔️", style=grey,
                                   row=2))
    view.add_item(CanvasButton(Action.REGION, job_id, index, label="Vary (Region)", emoji="🖌️", style=grey,
                               row=2))
    for action, arrow in PANS:
        view.add_item(CanvasButton(action, job_id, index, emoji=arrow, style=grey, row=3))


def _add_controls(view: discord.ui.View, job_id: int, index: int | None, *, row: int) -> None:
    grey = discord.ButtonStyle.secondary
    view.add_item(DetailsButton(Action.DETAILS, job_id, label="Details", emoji="ℹ️", style=grey, row=row))
    view.add_item(FavouriteButton(Action.FAVOURITE, job_id, index, emoji="⭐", style=grey, row=row))
    view.add_item(DeleteButton(Action.DELETE, job_id, index, emoji="🗑️", style=discord.ButtonStyle.danger,
                               row=row))
