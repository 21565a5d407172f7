"""The moderators' stats chart, drawn with Pillow alone (no plotting library to install): jobs and
images per day as paired bars, a headline with totals, and the top users as horizontal bars."""

from __future__ import annotations

import io
from collections.abc import Sequence
from dataclasses import dataclass

from PIL import Image, ImageDraw

from generation.sheets import font

WIDTH, HEIGHT = 960, 600
BACKGROUND = (30, 31, 34)
AXIS = (120, 124, 130)
TEXT = (230, 230, 230)
JOBS = (88, 101, 242)  # blurple
IMAGES = (87, 242, 135)  # green
TOP = (254, 231, 92)  # yellow


@dataclass(frozen=True)
class ChartData:
    title: str
    days: Sequence[str]  # "YYYY-MM-DD", oldest first
    jobs: Sequence[int]  # per day, aligned with `days`
    images: Sequence[int]
    headline: str  # totals, failure rate, render time
    top_users: Sequence[tuple[str, int]]  # (name, images), most first


def merge_days(jobs: Sequence[tuple[str, int]], images: Sequence[tuple[str, int]]
               ) -> tuple[list[str], list[int], list[int]]:
    """Align two per-day series on the union of their days (a day with no jobs still has a bar)."""
    job_map, image_map = dict(jobs), dict(images)
    days = sorted(set(job_map) | set(image_map))
    return days, [job_map.get(d, 0) for d in days], [image_map.get(d, 0) for d in days]


def _nice_max(value: int) -> int:
    """The smallest 1-2-5 step at or above `value`, so the axis reads in round numbers."""
    candidates = [s * 10**k for k in range(0, 12) for s in (1, 2, 5)]
    return next(c for c in candidates if c >= max(value, 1))


def stats_chart(data: ChartData) -> Image.Image:
    image = Image.new("RGB", (WIDTH, HEIGHT), BACKGROUND)
    draw = ImageDraw.Draw(image)
    title_font, text_font, small = font(26), font(16), font(12)
    draw.text((24, 16), data.title, font=title_font, fill=TEXT)
    draw.text((24, 52), data.headline, font=text_font, fill=TEXT)

    # 1. Jobs and images per day (left two thirds).
    left, top, right, bottom = 60, 100, 620, HEIGHT - 60
    draw.line((left, top, left, bottom), fill=AXIS, width=1)
    draw.line((left, bottom, right, bottom), fill=AXIS, width=1)
    peak = _nice_max(max([*data.jobs, *data.images, 1]))
    for frac in (0.0, 0.5, 1.0):
        y = bottom - round(frac * (bottom - top))
        draw.line((left - 4, y, left, y), fill=AXIS)
        label = f"{round(peak * frac)}"
        draw.text((left - 8, y), label, font=small, fill=TEXT, anchor="rm")
    n = len(data.days)
    if n:
        slot = (right - left) / n
        bar = max(1.0, slot * 0.4)
        for i, day in enumerate(data.days):
            x0 = left + i * slot + slot * 0.1
            for value, colour, offset in ((data.jobs[i], JOBS, 0.0), (data.images[i], IMAGES, bar)):
                h = round((bottom - top) * value / peak)
                if h:
                    draw.rectangle((round(x0 + offset), bottom - h, round(x0 + offset + bar) - 1, bottom - 1),
                                   fill=colour)
            # Label a handful of days, not all thirty.
            if n <= 8 or i % max(1, n // 6) == 0 or i == n - 1:
                draw.text((round(x0 + bar), bottom + 6), day[5:], font=small, fill=TEXT, anchor="mt")
    else:
        draw.text(((left + right) // 2, (top + bottom) // 2), "no activity", font=text_font, fill=AXIS,
                  anchor="mm")
    for i, (name, colour) in enumerate((("jobs", JOBS), ("images", IMAGES))):
        x = left + 10 + i * 100
        draw.rectangle((x, top - 22, x + 12, top - 10), fill=colour)
        draw.text((x + 18, top - 16), name, font=small, fill=TEXT, anchor="lm")

    # 2. Top users (right third).
    px, py = 660, top
    draw.text((px, py - 22), "top users (images)", font=small, fill=TEXT)
    most = max([n for _, n in data.top_users] or [1])
    row_h = 38
    for i, (name, count) in enumerate(list(data.top_users)[:10]):
        y = py + i * row_h
        w = round((WIDTH - px - 80) * count / most)
        draw.rectangle((px, y + 16, px + max(w, 2), y + 30), fill=TOP)
        draw.text((px, y + 12), name[:28], font=small, fill=TEXT, anchor="lb")
        draw.text((px + max(w, 2) + 6, y + 23), str(count), font=small, fill=TEXT, anchor="lm")
    return image


def stats_chart_png(data: ChartData) -> bytes:
    buf = io.BytesIO()
    stats_chart(data).save(buf, format="PNG")
    return buf.getvalue()
