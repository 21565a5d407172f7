"""Contact sheets and the stats chart: real pixels, checked where each thumbnail and number should be."""

from __future__ import annotations

import io

import pytest
from PIL import Image

from generation.charts import ChartData, merge_days, stats_chart_png
from generation.sheets import CELL, GAP, cell_box, contact_sheet, sheet_from_thumbnails

COLOURS = [(200, 30, 30), (30, 200, 30), (30, 30, 200), (200, 200, 30), (200, 30, 200),
           (30, 200, 200), (250, 250, 250), (120, 60, 0), (0, 60, 120)]


def centre_pixel(sheet: Image.Image, slot: int) -> tuple[int, ...]:
    x0, y0, x1, y1 = cell_box(slot)
    return tuple(sheet.getpixel(((x0 + x1) // 2, (y0 + y1) // 2)))  # type: ignore[arg-type]


def test_full_sheet_puts_each_image_in_its_cell() -> None:
    images = [Image.new("RGB", (64, 64), c) for c in COLOURS]
    sheet = contact_sheet(images)
    assert sheet.size == (3 * CELL + 4 * GAP, 3 * CELL + 4 * GAP)
    for slot, colour in enumerate(COLOURS):
        assert centre_pixel(sheet, slot) == colour


def test_short_page_leaves_cells_empty_and_numbers_each_image() -> None:
    images = [Image.new("RGB", (96, 64), (255, 255, 255)) for _ in range(4)]
    sheet = contact_sheet(images, first_number=10)
    empty = centre_pixel(sheet, 8)
    assert empty != (255, 255, 255)
    # The number badge darkens the top-left corner of every filled cell, not of the empty ones.
    for slot in range(4):
        x0, y0, _, _ = cell_box(slot)
        badge = sheet.crop((x0 + GAP, y0 + GAP, x0 + GAP + 40, y0 + GAP + 30)).convert("L")
        assert min(badge.getdata()) < 60  # type: ignore[type-var]
        assert max(badge.getdata()) > 200  # type: ignore[type-var]  # white digits on the badge


def test_wide_and_tall_images_keep_their_aspect() -> None:
    wide = Image.new("RGB", (200, 100), (255, 0, 0))
    sheet = contact_sheet([wide], columns=1, rows=1)
    x0, y0, x1, y1 = cell_box(0, columns=1)
    # Scaled to the cell's width: the band through the middle is red, the top edge background.
    assert sheet.getpixel(((x0 + x1) // 2, (y0 + y1) // 2)) == (255, 0, 0)
    assert sheet.getpixel(((x0 + x1) // 2, y0 + 5)) != (255, 0, 0)


def test_too_many_images_is_an_error() -> None:
    with pytest.raises(ValueError):
        contact_sheet([Image.new("RGB", (8, 8))] * 10)


def test_sheet_from_jpeg_thumbnails_is_a_png() -> None:
    thumbs = []
    for colour in COLOURS[:3]:
        buf = io.BytesIO()
        Image.new("RGB", (32, 32), colour).save(buf, format="JPEG")
        thumbs.append(buf.getvalue())
    png = sheet_from_thumbnails(thumbs)
    sheet = Image.open(io.BytesIO(png))
    assert sheet.format == "PNG"
    got = centre_pixel(sheet.convert("RGB"), 1)
    assert all(abs(a - b) < 8 for a, b in zip(got, COLOURS[1], strict=True))


def test_stats_chart_draws_bars_in_proportion() -> None:
    days, jobs, images = merge_days([("2026-11-01", 2), ("2026-11-03", 4)],
                                    [("2026-11-02", 1), ("2026-11-03", 8)])
    assert days == ["2026-11-01", "2026-11-02", "2026-11-03"] and jobs == [2, 0, 4] and images == [0, 1, 8]
    png = stats_chart_png(ChartData("stats", days, jobs, images, "6 jobs", [("alice", 8), ("bob", 1)]))
    chart = Image.open(io.BytesIO(png)).convert("RGB")
    assert chart.size == (960, 600)
    colours = {c for _, c in chart.getcolors(maxcolors=100_000) or []}
    assert (88, 101, 242) in colours and (87, 242, 135) in colours and (254, 231, 92) in colours

    # The tallest image bar is twice the tallest job bar (8 vs 4); the plot spans y 100..540.
    def height(colour: tuple[int, int, int]) -> int:
        rows = [y for y in range(100, 540) if any(chart.getpixel((x, y)) == colour for x in range(60, 620))]
        return 540 - min(rows)

    assert abs(height((87, 242, 135)) - 2 * height((88, 101, 242))) <= 2
