"""The family sheet's layout: generations left to right, later siblings below, caps counted in `more`."""

from __future__ import annotations

from PIL import Image

from generation.lineage import CELL, GAP, LABEL, MAX_ROWS, Node, draw_family, layout, thumbnail_box


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
