"""Canvas actions (Zoom Out, Pan, Make Square, Custom Zoom, Vary (Region)): one engine path.

Every action is the same three steps: place the source on a (possibly larger) canvas, mask what is to
be painted, inpaint, then paste the untouched source pixels back over the result (the overlay), so
what the member did not ask to change stays identical to the source, bit for bit.

The size arithmetic is pure and lives here (property-tested in tests/generation/test_canvas.py):

- Zoom Out z (2x, 1.5x, custom 1.0-2.0): the canvas is z times the source on each side, the source
  centred. A custom zoom with a new aspect then grows the shorter side of that canvas until it has the
  aspect, so the canvas always holds the whole source.
- Make Square: the canvas is max(w, h) on both sides, the source centred.
- Pan left / right / up / down: the canvas grows by half of that dimension (1.5x) on the side panned
  towards, the source kept against the opposite edge: the aspect is rewritten as Midjourney's pan does
  (a 1:1 panned left becomes 3:2).

The canvas keeps the source's own pixel scale when it fits the family's pixel limit (sides rounded up
to the family's multiple, so the source is pasted back 1:1). Past the limit the whole canvas is scaled
down to fit, and the plan carries a note saying so; a canvas still below the smallest side is refused.
"""

from __future__ import annotations

import math
import secrets
from dataclasses import dataclass, replace
from enum import StrEnum

import numpy as np
from PIL import Image

from generation.errors import InvalidRequest
from generation.families import family_of
from generation.masks import paint_of
from generation.request import Kind, RenderRequest
from generation.validate import MAX_SEED, Limits, max_pixels

# Pan grows the panned dimension by this fraction of itself.
PAN_GROWTH = 0.5
MIN_ZOOM, MAX_ZOOM = 1.0, 2.0
# Smallest canvas side worth rendering (the tiny models' size; real families are far above it).
MIN_SIDE = 64
# Vary (Region) cells: a GRID x GRID grid over the image, one bit per cell, row-major from the top left.
GRID = 4
ALL_CELLS = (1 << GRID * GRID) - 1


class CanvasAction(StrEnum):
    ZOOM = "zoom"
    SQUARE = "square"
    PAN_LEFT = "pan_left"
    PAN_RIGHT = "pan_right"
    PAN_UP = "pan_up"
    PAN_DOWN = "pan_down"


PANS = (CanvasAction.PAN_LEFT, CanvasAction.PAN_RIGHT, CanvasAction.PAN_UP, CanvasAction.PAN_DOWN)


@dataclass(frozen=True, slots=True)
class CanvasPlan:
    """Where the source goes on the output canvas: output `width` x `height`, the source scaled to
    the box `(x, y, w, h)`. `note` says when the canvas had to be scaled down to fit the family."""

    width: int
    height: int
    box: tuple[int, int, int, int]
    note: str | None = None


def _ratio(aspect: str) -> float:
    try:
        w, h = (float(x) for x in aspect.split(":"))
    except ValueError:
        raise InvalidRequest(f"`{aspect[:20]}` is not an aspect ratio: use W:H, e.g. 16:9.") from None
    if not (w > 0 and h > 0) or max(w / h, h / w) > 3:
        raise InvalidRequest("Keep the aspect within 3:1 and 1:3.")
    return w / h


def _canvas(source: tuple[int, int], action: CanvasAction, zoom: float, aspect: str | None,
            ) -> tuple[float, float, float, float]:
    """Canvas size and the source's top-left corner in source pixels (unrounded)."""
    sw, sh = source
    if action == CanvasAction.ZOOM:
        if not MIN_ZOOM <= zoom <= MAX_ZOOM:
            raise InvalidRequest(f"Zoom goes from {MIN_ZOOM:g} to {MAX_ZOOM:g}.")
        cw, ch = sw * zoom, sh * zoom
        if aspect is not None:
            ratio = _ratio(aspect)
            if cw / ch < ratio:
                cw = ch * ratio
            else:
                ch = cw / ratio
        return cw, ch, (cw - sw) / 2, (ch - sh) / 2
    if action == CanvasAction.SQUARE:
        if sw == sh:
            raise InvalidRequest("This image is already square.")
        side = float(max(sw, sh))
        return side, side, (side - sw) / 2, (side - sh) / 2
    grow_w = sw * PAN_GROWTH if action in (CanvasAction.PAN_LEFT, CanvasAction.PAN_RIGHT) else 0.0
    grow_h = sh * PAN_GROWTH if action in (CanvasAction.PAN_UP, CanvasAction.PAN_DOWN) else 0.0
    # The new strip goes on the side panned towards; the source keeps the opposite edge.
    x = grow_w if action == CanvasAction.PAN_LEFT else 0.0
    y = grow_h if action == CanvasAction.PAN_UP else 0.0
    return sw + grow_w, sh + grow_h, x, y


def _ceil(value: float, multiple: int) -> int:
    return max(multiple, math.ceil(value / multiple - 1e-9) * multiple)


def _floor(value: float, multiple: int) -> int:
    return max(multiple, math.floor(value / multiple + 1e-9) * multiple)


def plan(source: tuple[int, int], action: CanvasAction, *, multiple: int, max_pixels: int,
         zoom: float = 2.0, aspect: str | None = None) -> CanvasPlan:
    """The output canvas for `action` on a source of `source` (w, h) pixels, within `max_pixels` and
    with sides a multiple of `multiple`. InvalidRequest says why an action cannot apply."""
    sw, sh = source
    if sw <= 0 or sh <= 0:
        raise InvalidRequest("The source image is empty.")
    cw, ch, x, y = _canvas(source, action, zoom, aspect)
    width, height = _ceil(cw, multiple), _ceil(ch, multiple)
    if width * height <= max_pixels:
        # Rounding up only widens the border: spread the extra so a centred source stays centred, and a
        # panned one keeps its edge.
        bx = round(x + (width - cw) * (x / (cw - sw) if cw > sw else 0.5))
        by = round(y + (height - ch) * (y / (ch - sh) if ch > sh else 0.5))
        return CanvasPlan(width, height, (bx, by, sw, sh))
    scale = math.sqrt(max_pixels / (cw * ch))
    width, height = _floor(cw * scale, multiple), _floor(ch * scale, multiple)
    if width < MIN_SIDE or height < MIN_SIDE:
        raise InvalidRequest("That canvas is too stretched for this model.")
    # The floor may take a little more than the scale off each side: fit the source to what is left.
    fx, fy = width / cw, height / ch
    bw, bh = min(width, max(1, round(sw * fx))), min(height, max(1, round(sh * fy)))
    bx = min(width - bw, round(x * fx))
    by = min(height - bh, round(y * fy))
    note = (f"The canvas was scaled down to {width}x{height} to stay within this model's "
            f"{max_pixels / 1e6:.1f} MP limit.")
    return CanvasPlan(width, height, (bx, by, bw, bh), note)


def region_plan(source: tuple[int, int], cells: int) -> CanvasPlan:
    """Vary (Region): the canvas is the source itself; `cells` picks what is repainted."""
    if not 0 < cells <= ALL_CELLS:
        raise InvalidRequest("Select at least one part of the image to repaint.")
    sw, sh = source
    return CanvasPlan(sw, sh, (0, 0, sw, sh))


def _cells(rows: range, cols: range) -> int:
    return sum(1 << (r * GRID + c) for r in rows for c in cols)


_HALF, _REST = range(GRID // 2), range(GRID // 2, GRID)
_ALL, _MIDDLE = range(GRID), range(1, GRID - 1)
# Vary (Region)'s named selections, as cell masks (the editor's presets menu).
PRESETS: dict[str, int] = {
    "left half": _cells(_ALL, _HALF),
    "right half": _cells(_ALL, _REST),
    "top": _cells(_HALF, _ALL),
    "bottom": _cells(_REST, _ALL),
    "centre": _cells(_MIDDLE, _MIDDLE),
    "border": ALL_CELLS & ~_cells(_MIDDLE, _MIDDLE),
}


def selection_thumbnail(source: Image.Image, cells: int, side: int = 256) -> Image.Image:
    """The source, small, with the chosen cells tinted and the grid drawn: what the Vary (Region) editor
    shows after each toggle."""
    from PIL import ImageDraw

    thumb = source.convert("RGB")
    thumb.thumbnail((side, side), Image.Resampling.LANCZOS)
    tint = Image.new("RGB", thumb.size, (230, 40, 90))
    mask = Image.new("L", thumb.size, 0)
    for index in range(GRID * GRID):
        if cells >> index & 1:
            mask.paste(110, cell_box(index, thumb.size))
    thumb = Image.composite(tint, thumb, mask)
    draw = ImageDraw.Draw(thumb)
    w, h = thumb.size
    for k in range(1, GRID):
        draw.line([(k * w // GRID, 0), (k * w // GRID, h)], fill=(255, 255, 255), width=1)
        draw.line([(0, k * h // GRID), (w, k * h // GRID)], fill=(255, 255, 255), width=1)
    return thumb


def cell_box(index: int, size: tuple[int, int]) -> tuple[int, int, int, int]:
    """Pixel box (left, top, right, bottom) of cell `index` on an image of `size`; the cells tile it."""
    w, h = size
    row, col = divmod(index, GRID)
    return (col * w // GRID, row * h // GRID, (col + 1) * w // GRID, (row + 1) * h // GRID)


def prepare(source: Image.Image, canvas: CanvasPlan, cells: int | None = None,
            paint: Image.Image | None = None) -> tuple[Image.Image, Image.Image]:
    """The inpaint pipeline's inputs: the canvas image (the source in its box, the border filled by
    stretching the source's edge pixels, a better start than grey for a 9-channel model) and the mask
    (white = paint). With `cells`, only those cells of the source are painted (Vary (Region)); with `paint`
    (a mask at the source's size, white = repaint), only what it marks (Vary (Region) with a mask)."""
    x, y, w, h = canvas.box
    placed = source.convert("RGB")
    if placed.size != (w, h):
        placed = placed.resize((w, h), Image.Resampling.LANCZOS)
    pixels = np.asarray(placed)
    pad = ((y, canvas.height - y - h), (x, canvas.width - x - w), (0, 0))
    image = Image.fromarray(np.pad(pixels, pad, mode="edge"))
    mask = Image.new("L", (canvas.width, canvas.height), 255)
    if paint is not None:
        mask.paste(0, (0, 0, canvas.width, canvas.height))
        mask.paste(paint.convert("L").resize((w, h), Image.Resampling.NEAREST), (x, y))
    elif cells is None:
        mask.paste(0, (x, y, x + w, y + h))
    else:
        mask.paste(0, (0, 0, canvas.width, canvas.height))
        for index in range(GRID * GRID):
            if cells >> index & 1:
                left, top, right, bottom = cell_box(index, (w, h))
                mask.paste(255, (x + left, y + top, x + right, y + bottom))
    return image, mask


def placed(request: RenderRequest) -> CanvasPlan:
    """The plan a canvas request was made with: its canvas size and the box its source was placed in
    (for a zoom, where the parent image sits inside the result: the infinite zoom reads it here)."""
    return CanvasPlan(request.width, request.height, request.box or (0, 0, request.width, request.height))


def canvas_inputs(request: RenderRequest, source: Image.Image | None) -> tuple[Image.Image, Image.Image]:
    """The canvas image and mask of a canvas request (as the engine feeds them to the inpaint pipeline)."""
    if source is None:
        raise ValueError("canvas requests need their source image")
    # A member's mask rides on the source as its alpha channel (generation/masks.py).
    paint = paint_of(source) if request.mask is not None else None
    return prepare(source, placed(request), request.cells, paint)


def overlay(rendered: Image.Image, image: Image.Image, mask: Image.Image, feather: int = 0) -> Image.Image:
    """The render where the mask is white, the canvas image (the source) everywhere else: the VAE's
    round trip blurs even the pixels a masked render kept, so they are put back exactly. With `feather`,
    the render fades into the source over that many pixels outside the mask (`feathered`)."""
    if rendered.size != image.size:
        rendered = rendered.resize(image.size, Image.Resampling.LANCZOS)
    return Image.composite(rendered.convert("RGB"), image, feathered(mask, feather))


MAX_FEATHER = 64


def feathered(mask: Image.Image, feather: int) -> Image.Image:
    """The mask grown into a ramp: 255 on the mask, 255 * (f + 1 - d) / (f + 1) at d pixels from it
    (the larger of the row and column distances), 0 farther than `feather` = f. Growing the mask one pixel
    at a time and averaging the f + 1 masks gives exactly that ramp, so every pixel farther than the feather
    keeps the source bit for bit (a Gaussian blur would leak into them)."""
    if feather <= 0:
        return mask
    feather = min(feather, MAX_FEATHER)
    grown = np.asarray(mask.convert("L")) >= 128
    total = grown.astype(np.uint16)
    for _ in range(feather):
        # One pixel in each of the 8 directions, as two separable passes of boolean ORs (PIL's MaxFilter
        # is a rank filter, 25x slower).
        rows = grown.copy()
        rows[1:] |= grown[:-1]
        rows[:-1] |= grown[1:]
        grown = rows.copy()
        grown[:, 1:] |= rows[:, :-1]
        grown[:, :-1] |= rows[:, 1:]
        total += grown
    return Image.fromarray((total.astype(np.uint32) * 255 // (feather + 1)).astype(np.uint8), "L")


def canvas_of(parent: RenderRequest, index: int, source: str, action: CanvasAction | None, *, family: str,
              limits: Limits | None = None, zoom: float = 2.0, aspect: str | None = None,
              cells: int | None = None, prompt: str | None = None, seed: int | None = None,
              count: int = 4, mask: str | None = None) -> RenderRequest:
    """A canvas job on image `index` of `parent` (whose blob key is `source`): `action` for Zoom Out /
    Pan / Make Square, or `cells` or `mask` (a blob key, generation/masks.py; with action None) for Vary
    (Region). A fresh seed and a grid of `count`
    like a new /imagine; `prompt` replaces the parent's (the custom zoom and remix modals)."""
    if not 0 <= index < parent.count:
        raise InvalidRequest(f"There is no image {index + 1} in that job.")
    if not 1 <= count <= 4:
        raise InvalidRequest("Count must be between 1 and 4.")
    size = (parent.width, parent.height)
    if action is None and mask is not None:
        # The mask was checked against this size when it was read (masks.read_mask).
        canvas, cells = CanvasPlan(*size, (0, 0, *size)), None
    elif action is None:
        if cells is None:
            raise InvalidRequest("Pick a canvas action or a region.")
        canvas = region_plan(size, cells)
    else:
        fam = family_of(family)
        canvas = plan(size, action, multiple=fam.multiple, max_pixels=max_pixels(family, limits or Limits()),
                      zoom=zoom, aspect=aspect)
    if seed is None:
        seed = secrets.randbelow(MAX_SEED + 1)
    new_prompt = parent.prompt if prompt is None or not prompt.strip() else prompt.strip()
    return replace(
        parent,
        kind=Kind.CANVAS,
        prompt=new_prompt,
        width=canvas.width,
        height=canvas.height,
        seeds=tuple((seed + i) % (MAX_SEED + 1) for i in range(count)),
        source=source,
        # The masked area starts from pure noise: a 4-channel model keeps the rest by latent blending.
        strength=1.0,
        box=canvas.box,
        cells=cells,
        mask=mask if action is None else None,
        notes=parent.notes + ((canvas.note,) if canvas.note else ()),
        extra={**parent.extra, "parent_index": index, "canvas": str(action) if action else "region"},
    )
