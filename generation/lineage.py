"""A job's family drawn as one picture (/lineage): each job a thumbnail with its number and the action that
made it, parents to the left of their children, a child's subtree under its older siblings'.

Pure layout and pillow drawing: the bot decides which jobs the viewer may see and hands only those in.
"""

from __future__ import annotations

import io
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from PIL import Image, ImageDraw, ImageOps

from generation.sheets import BACKGROUND, PLACEHOLDER, TEXT, font

CELL = 160
GAP = 28  # wide enough for the connector between a parent and its children
LABEL = 22  # the strip under each thumbnail holding "#12 U2"
# At most this many columns (generations) and rows: 6 x 4 = 24 nodes, under a select menu's 25 options.
MAX_COLUMNS = 6
MAX_ROWS = 4
LINE = (148, 155, 164)


@dataclass(frozen=True, slots=True)
class Node:
    """One job of the family: `parent` is None for the oldest one drawn."""

    job_id: int
    parent: int | None
    label: str


@dataclass(frozen=True, slots=True)
class Layout:
    """Where each drawn node sits (column, row), in drawing order, and how many nodes did not fit."""

    slots: dict[int, tuple[int, int]]
    more: int

    @property
    def columns(self) -> int:
        return 1 + max((c for c, _ in self.slots.values()), default=0)

    @property
    def rows(self) -> int:
        return 1 + max((r for _, r in self.slots.values()), default=0)


def layout(nodes: Sequence[Node], *, max_columns: int = MAX_COLUMNS, max_rows: int = MAX_ROWS) -> Layout:
    """Column = generation (from the first node, the root); a first child shares its parent's row, each
    later child starts the next free row below everything drawn so far (a tree read left to right, top to
    bottom). Nodes whose parent is not among `nodes` (and not the root) are left out; nodes past the
    caps are counted in `more`, with everything below them."""
    if not nodes:
        return Layout({}, 0)
    children: dict[int, list[int]] = {}
    for node in nodes[1:]:
        if node.parent is not None:
            children.setdefault(node.parent, []).append(node.job_id)
    slots: dict[int, tuple[int, int]] = {}
    next_row = 0
    # Depth first, children in the order given; (job, column, row the parent asked for or None).
    stack: list[tuple[int, int, int | None]] = [(nodes[0].job_id, 0, None)]
    while stack:
        job, column, row = stack.pop()
        if row is None:
            row = next_row
        if column >= max_columns or row >= max_rows:
            continue  # with everything below it: counted in `more`
        slots[job] = (column, row)
        next_row = max(next_row, row + 1)
        kids = children.get(job, [])
        # The first child takes the parent's row; the others a new row each, assigned when they are reached.
        stack += [(kid, column + 1, None) for kid in reversed(kids[1:])]
        if kids:
            stack.append((kids[0], column + 1, row))
    return Layout(slots, _reachable(nodes, children) - len(slots))


def _reachable(nodes: Sequence[Node], children: Mapping[int, list[int]]) -> int:
    """How many nodes hang from the root (the ones the caps may leave out)."""
    count, stack = 0, [nodes[0].job_id]
    while stack:
        count += 1
        stack += children.get(stack.pop(), [])
    return count


def thumbnail_box(column: int, row: int) -> tuple[int, int, int, int]:
    """The pixel box (left, top, right, bottom) of the thumbnail area of slot (column, row)."""
    x = GAP + column * (CELL + GAP)
    y = GAP + row * (CELL + LABEL + GAP)
    return x, y, x + CELL, y + CELL


def fit(image: Image.Image) -> Image.Image:
    """The picture scaled into a CELL x CELL square, aspect kept, centred on the background."""
    image = ImageOps.contain(image.convert("RGB"), (CELL, CELL), Image.Resampling.LANCZOS)
    tile = Image.new("RGB", (CELL, CELL), BACKGROUND)
    tile.paste(image, ((CELL - image.width) // 2, (CELL - image.height) // 2))
    return tile


def draw_family(nodes: Sequence[Node], images: Mapping[int, Image.Image | None], plan: Layout) -> Image.Image:
    """The family sheet: thumbnails at their slots (a PLACEHOLDER for a job without a picture), each
    labelled, joined to its parent by an elbow line; "and N more" along the bottom when some did not fit."""
    footer = LABEL + GAP if plan.more else 0
    width = GAP + plan.columns * (CELL + GAP)
    height = GAP + plan.rows * (CELL + LABEL + GAP) + footer
    sheet = Image.new("RGB", (width, height), BACKGROUND)
    draw = ImageDraw.Draw(sheet)
    face = font(15)
    by_id = {n.job_id: n for n in nodes}
    for job, (column, row) in plan.slots.items():
        node = by_id[job]
        left, top, right, bottom = thumbnail_box(column, row)
        image = images.get(job)
        if image is None:
            draw.rectangle((left, top, right - 1, bottom - 1), fill=PLACEHOLDER)
        else:
            sheet.paste(fit(image), (left, top))
        draw.text((left, bottom + 4), f"#{job} {node.label}"[:24], font=face, fill=TEXT)
        if node.parent in plan.slots:
            _, p_top, p_right, p_bottom = thumbnail_box(*plan.slots[node.parent])
            mid_x = p_right + GAP // 2
            y0, y1 = (p_top + p_bottom) // 2, (top + bottom) // 2
            draw.line([(p_right + 2, y0), (mid_x, y0), (mid_x, y1), (left - 2, y1)], fill=LINE, width=2)
    if plan.more:
        draw.text((GAP, height - footer), f"… and {plan.more} more not drawn", font=face, fill=TEXT)
    return sheet


def family_png(nodes: Sequence[Node], images: Mapping[int, Image.Image | None], plan: Layout) -> bytes:
    buf = io.BytesIO()
    draw_family(nodes, images, plan).save(buf, format="PNG", compress_level=3)
    return buf.getvalue()


# -- infinite zoom --------------------------------------------------------------------------------------

FRAMES_PER_STEP = 12  # frames from one image to the zoom made from it (the last is the next step's first)
FRAME_MS = 70
MAX_SIDE = 384


@dataclass(frozen=True, slots=True)
class ZoomStep:
    """One Zoom Out: the result `image`, and `box` (x, y, w, h) where its source sat on its canvas of
    `canvas` (w, h) pixels, as generation/canvas.py planned it."""

    image: Image.Image
    canvas: tuple[int, int]
    box: tuple[int, int, int, int]


Rect = tuple[float, float, float, float]  # x, y, w, h in the outermost image's pixels


def _rects(steps: Sequence[ZoomStep]) -> list[Rect]:
    """Where each image (innermost first, outermost last) lies in the outermost image's pixels."""
    outer = steps[-1].image
    rects: list[Rect] = [(0.0, 0.0, float(outer.width), float(outer.height))]
    for step in reversed(steps):
        x, y, w, h = rects[0]
        sx, sy = w / step.canvas[0], h / step.canvas[1]
        bx, by, bw, bh = step.box
        rects.insert(0, (x + bx * sx, y + by * sy, bw * sx, bh * sy))
    return rects


def _view(a: Rect, b: Rect, t: float) -> Rect:
    """The view a fraction `t` of the way from rect `a` to the larger rect `b`: the size grows
    geometrically (a steady zoom speed) and the corner moves with the size, so the point the two rects
    share in relative position stays still on screen, as a camera pulling back would."""
    width = a[2] * (b[2] / a[2]) ** t
    s = (width - a[2]) / (b[2] - a[2]) if b[2] != a[2] else t
    return (a[0] + (b[0] - a[0]) * s, a[1] + (b[1] - a[1]) * s, width, a[3] + (b[3] - a[3]) * s)


def _frame(layers: Sequence[Image.Image], rects: Sequence[Rect], view: Rect, size: tuple[int, int],
           ) -> Image.Image:
    """The view drawn from the layers, outermost first, each finer layer over the coarser one."""
    frame = Image.new("RGB", size, BACKGROUND)
    scale_x, scale_y = size[0] / view[2], size[1] / view[3]
    for layer, (x, y, w, h) in zip(reversed(layers), reversed(rects), strict=True):
        left, top = (x - view[0]) * scale_x, (y - view[1]) * scale_y
        right, bottom = left + w * scale_x, top + h * scale_y
        cl, ct = max(0, round(left)), max(0, round(top))
        cr, cb = min(size[0], round(right)), min(size[1], round(bottom))
        if cr - cl < 2 or cb - ct < 2:
            continue  # too small to add anything the coarser layer does not show
        # The part of the layer that lands on the frame's pixels [cl, cr) x [ct, cb).
        fx, fy = layer.width / (right - left), layer.height / (bottom - top)
        extent = ((cl - left) * fx, (ct - top) * fy, (cr - left) * fx, (cb - top) * fy)
        piece = layer.transform((cr - cl, cb - ct), Image.Transform.EXTENT, extent, Image.Resampling.BICUBIC)
        frame.paste(piece, (cl, ct))
    return frame


def zoom_frames(inner: Image.Image, steps: Sequence[ZoomStep], *, frames_per_step: int = FRAMES_PER_STEP,
                max_side: int = MAX_SIDE) -> list[Image.Image]:
    """The infinite zoom: from `inner` filling the frame, pulling back through each Zoom Out until the
    outermost image fills it. len(steps) * frames_per_step + 1 frames, the outermost image's aspect."""
    if not steps:
        raise ValueError("an infinite zoom needs at least one Zoom Out")
    outer = steps[-1].image
    ratio = max_side / max(outer.size)
    size = (max(1, round(outer.width * ratio)), max(1, round(outer.height * ratio)))
    layers = [inner.convert("RGB"), *(s.image.convert("RGB") for s in steps)]
    rects = _rects(steps)
    frames = [_frame(layers, rects, _view(rects[k], rects[k + 1], i / frames_per_step), size)
              for k in range(len(steps)) for i in range(frames_per_step)]
    return [*frames, _frame(layers, rects, rects[-1], size)]


def zoom_webp(inner: Image.Image, steps: Sequence[ZoomStep], *, limit: int) -> bytes:
    """The infinite zoom as an animated WebP (looping, inner to outer, holding on the last frame) of at
    most `limit` bytes: smaller frames and a lower quality until it fits."""
    side, quality = MAX_SIDE, 80
    while True:
        frames = zoom_frames(inner, steps, max_side=side)
        durations = [FRAME_MS] * (len(frames) - 1) + [FRAME_MS * 15]
        buf = io.BytesIO()
        frames[0].save(buf, format="WEBP", save_all=True, append_images=frames[1:], duration=durations,
                       loop=0, quality=quality, method=4)
        if buf.tell() <= limit or side <= 96:
            if buf.tell() > limit:
                raise ValueError("the infinite zoom does not fit the upload limit")
            return buf.getvalue()
        side, quality = int(side * 0.75), max(50, quality - 10)
