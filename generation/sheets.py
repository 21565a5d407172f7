"""Contact sheets: a page of a gallery as one picture of numbered thumbnails (3x3 by default), so a
page turn costs one attachment rather than nine."""

from __future__ import annotations

import io
from collections.abc import Sequence
from functools import lru_cache

from PIL import Image, ImageDraw, ImageFont, ImageOps

CELL = 256
GAP = 6
BACKGROUND = (30, 31, 34)  # Discord's dark theme, so the sheet sits quietly in the chat
EMPTY = (43, 45, 49)
PLACEHOLDER = (96, 44, 52)  # a cell whose image file is missing or damaged: plainly not a picture
BADGE = (0, 0, 0, 170)
TEXT = (255, 255, 255)


@lru_cache(maxsize=8)
def font(size: int) -> ImageFont.FreeTypeFont | ImageFont.ImageFont:
    try:
        return ImageFont.load_default(size=size)
    except TypeError:  # Pillow < 10.1 has only the small bitmap font
        return ImageFont.load_default()


def _fit(image: Image.Image, cell: int) -> Image.Image:
    """Scale into a cell x cell square keeping the aspect ratio, centred on the sheet background."""
    # Small thumbnails are scaled up too: every cell of a sheet has the same visual weight.
    image = ImageOps.contain(image.convert("RGB"), (cell, cell), Image.Resampling.LANCZOS)
    tile = Image.new("RGB", (cell, cell), BACKGROUND)
    tile.paste(image, ((cell - image.width) // 2, (cell - image.height) // 2))
    return tile


def _badge(draw: ImageDraw.ImageDraw, x: int, y: int, label: str, size: int) -> None:
    face = font(size)
    left, top, right, bottom = draw.textbbox((0, 0), label, font=face)
    pad = max(3, size // 4)
    w, h = right - left + 2 * pad, bottom - top + 2 * pad
    draw.rounded_rectangle((x, y, x + w, y + h), radius=pad, fill=BADGE)
    draw.text((x + pad - left, y + pad - top), label, font=face, fill=TEXT)


def _placeholder(draw: ImageDraw.ImageDraw, x: int, y: int, cell: int) -> None:
    """A flat cell with a short note along its bottom edge (the centre stays the plain colour)."""
    draw.rectangle((x, y, x + cell - 1, y + cell - 1), fill=PLACEHOLDER)
    face = font(max(10, cell // 14))
    label = "image unavailable"
    left, top, right, bottom = draw.textbbox((0, 0), label, font=face)
    draw.text((x + (cell - (right - left)) // 2 - left, y + cell - (bottom - top) - cell // 12 - top), label,
              font=face, fill=TEXT)


def contact_sheet(images: Sequence[Image.Image | None], *, columns: int = 3, rows: int = 3,
                  cell: int = CELL, first_number: int = 1) -> Image.Image:
    """Up to columns x rows thumbnails in reading order, each with its number (first_number, +1, ...)
    in a badge at its top-left corner. None stands for an image that cannot be shown: its cell is a
    PLACEHOLDER, numbered like the rest. Missing cells on a short last page stay empty."""
    if columns < 1 or rows < 1:
        raise ValueError("a sheet needs at least one row and one column")
    if len(images) > columns * rows:
        raise ValueError(f"{len(images)} images do not fit a {columns}x{rows} sheet")
    width = columns * cell + (columns + 1) * GAP
    height = rows * cell + (rows + 1) * GAP
    sheet = Image.new("RGB", (width, height), BACKGROUND)
    draw = ImageDraw.Draw(sheet, "RGBA")
    badge_size = max(12, cell // 9)
    for slot in range(columns * rows):
        x = GAP + (slot % columns) * (cell + GAP)
        y = GAP + (slot // columns) * (cell + GAP)
        if slot < len(images):
            image = images[slot]
            if image is None:
                _placeholder(draw, x, y, cell)
            else:
                sheet.paste(_fit(image, cell), (x, y))
            _badge(draw, x + GAP, y + GAP, str(first_number + slot), badge_size)
        else:
            draw.rectangle((x, y, x + cell - 1, y + cell - 1), fill=EMPTY)
    return sheet


def cell_box(slot: int, *, columns: int = 3, cell: int = CELL) -> tuple[int, int, int, int]:
    """The pixel box of cell `slot` on a sheet made with the same layout."""
    x = GAP + (slot % columns) * (cell + GAP)
    y = GAP + (slot // columns) * (cell + GAP)
    return x, y, x + cell, y + cell


def sheet_png(images: Sequence[Image.Image | None], **layout: int) -> bytes:
    buf = io.BytesIO()
    contact_sheet(images, **layout).save(buf, format="PNG", optimize=False, compress_level=3)
    return buf.getvalue()


def sheet_from_thumbnails(thumbnails: Sequence[bytes], **layout: int) -> bytes:
    """PNG of a sheet made from encoded thumbnails (JPEG or PNG bytes), as the blob store caches them."""
    images = []
    for data in thumbnails:
        with Image.open(io.BytesIO(data)) as im:
            im.load()
            images.append(im.convert("RGB"))
    return sheet_png(images, **layout)
