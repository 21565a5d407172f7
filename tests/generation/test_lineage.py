"""The family sheet's layout (generations left to right, later siblings below, caps counted in `more`) and
the infinite zoom's frames."""

from __future__ import annotations

import numpy as np
from PIL import Image

from generation.canvas import CanvasAction, plan, prepare
from generation.lineage import (
    CELL,
    GAP,
    LABEL,
    MAX_ROWS,
    Node,
    ZoomStep,
    draw_family,
    layout,
    thumbnail_box,
    zoom_frames,
)


def test_a_tree_reads_left_to_right_and_top_to_bottom() -> None:
    nodes = [Node(1, None, "/imagine"), Node(2, 1, "U1"), Node(3, 2, "Zoom Out 2x"), Node(4, 1, "V1"),
             Node(5, 4, "🔄"), Node(6, 4, "🔄"), Node(7, 1, "U2"), Node(8, 99, "hangs from a hidden job")]
    plan = layout(nodes)
    assert plan.slots == {1: (0, 0), 2: (1, 0), 3: (2, 0), 4: (1, 1), 5: (2, 1), 6: (2, 2), 7: (1, 3)}
    assert plan.more == 0  # 8's parent is not in the family drawn: it is not part of it


def test_a_large_family_is_capped_and_says_how_many_more() -> None:
    # 1 -> 2 -> ... -> 9 (a long chain) and 30 children of 1.
    nodes = [Node(1, None, "/imagine"), *(Node(i, i - 1, "U1") for i in range(2, 10)),
             *(Node(100 + i, 1, "V1") for i in range(30))]
    plan = layout(nodes)
    assert len(plan.slots) <= 25  # each drawn job is an option of one select menu
    assert plan.more == len(nodes) - len(plan.slots) > 0
    assert plan.columns == 6 and plan.rows == MAX_ROWS
    pictures = {n.job_id: Image.new("RGB", (64, 64), (200, 10 * (n.job_id % 20), 40)) for n in nodes}
    sheet = draw_family(nodes, pictures, plan)
    assert sheet.height == GAP + MAX_ROWS * (CELL + LABEL + GAP) + LABEL + GAP  # the "and N more" line
    left, top, _, _ = thumbnail_box(1, 1)
    assert plan.slots[100] == (1, 1) and sheet.getpixel((left + 5, top + 5)) == pictures[100].getpixel((0, 0))


def _noise(size: tuple[int, int], seed: int) -> Image.Image:
    return Image.fromarray(np.random.default_rng(seed).integers(0, 256, (size[1], size[0], 3), np.uint8))


def _zoom_of(source: Image.Image, zoom: float, seed: int) -> ZoomStep:
    """A Zoom Out as the engine makes it: the canvas module's plan, the source kept in its box, new pixels
    around it."""
    canvas = plan(source.size, CanvasAction.ZOOM, multiple=8, max_pixels=4096 * 4096, zoom=zoom)
    image, mask = prepare(source, canvas)
    image = Image.composite(_noise(image.size, seed), image, mask)
    return ZoomStep(image, (canvas.width, canvas.height), canvas.box)


def _diff(a: Image.Image, b: Image.Image) -> float:
    return float(np.abs(np.asarray(a, np.float32) - np.asarray(b.resize(a.size, Image.Resampling.BOX),
                                                                 np.float32)).mean())


def test_the_infinite_zoom_pulls_back_from_the_innermost_image_to_the_outermost() -> None:
    inner = Image.new("RGB", (128, 128), (220, 40, 40))
    first = _zoom_of(inner, 2.0, 1)
    second = _zoom_of(first.image, 1.5, 2)
    frames = zoom_frames(inner, [first, second], frames_per_step=5, max_side=192)
    assert len(frames) == 2 * 5 + 1 and {f.size for f in frames} == {(192, 192)}
    assert _diff(frames[0], inner) < 1  # the innermost fills the first frame
    assert _diff(frames[-1], second.image) < 40 < _diff(frames[-1], first.image)  # noise: the outermost's
    # Halfway (after the first Zoom Out) the frame is the first zoom, the red source in its centred box.
    middle = np.asarray(frames[5])
    assert (middle[64:128, 64:128] == (220, 40, 40)).all() and _diff(frames[5], first.image) < 40
    # Each step the red square shrinks steadily (a pull-back) to 128 px of 384, a third of the last frame.
    sides = [int((np.asarray(f)[96] == (220, 40, 40)).all(axis=1).sum()) for f in frames]
    assert sides == sorted(sides, reverse=True) and sides[0] == 192 and 63 <= sides[-1] <= 65
