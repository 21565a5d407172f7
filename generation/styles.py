"""Server styles, the Discord-free part: valid names, the `--style name` flag, what a style adds to a prompt,
and the contact sheet `/style list` shows (one row per style: its name, then its sample images).

A style is a name in one server for a prompt suffix and an optional LoRA (name and weight), plus up to five
sample images kept as blob keys (their content hashes) for image references (`--sref @name`) once those
exist. `--style name` is expanded into the prompt before validation, so the job stores the expanded prompt:
rerolls and variations reproduce it even after the style is edited or removed.
"""

from __future__ import annotations

import io
import re
from collections.abc import Sequence
from dataclasses import dataclass

from PIL import Image, ImageDraw, ImageOps

from generation.errors import InvalidRequest
from generation.loras import MAX_WEIGHT, MIN_WEIGHT
from generation.sheets import BACKGROUND, GAP, TEXT, font

MAX_IMAGES = 5
MAX_SUFFIX_CHARS = 300
NAME_RE = re.compile(r"[a-z0-9][a-z0-9_-]{1,31}")
# As validate.py's flags: phones turn "--" into an em or en dash.
_STYLE_FLAG = re.compile(r"(?:(?<=\s)|^)(?:--|—|–)style(?:\s+(\S+)|\s*$)", re.I)
SHEET_CELL = 128
LABEL_WIDTH = 200


@dataclass(frozen=True)
class StyleParts:
    """What a style adds to a prompt."""

    name: str
    suffix: str
    lora: str | None
    lora_weight: float


def check_name(raw: str) -> str:
    """The style name as stored (lowercase), or InvalidRequest saying what a name may be."""
    name = raw.strip().lower()
    if not NAME_RE.fullmatch(name):
        raise InvalidRequest("A style name is 2-32 characters: letters, digits, `-` and `_`, starting with a "
                             "letter or digit.")
    return name


def check_suffix(raw: str | None) -> str:
    suffix = " ".join((raw or "").split())
    if len(suffix) > MAX_SUFFIX_CHARS:
        raise InvalidRequest(f"The style's suffix is too long ({MAX_SUFFIX_CHARS} characters at most).")
    if re.search(r"(?:^|\s)(?:--|—|–)\w", suffix) or "<lora:" in suffix.lower():
        # A style's LoRA is its own option; flags in a suffix would fight the member's own.
        raise InvalidRequest("A style's suffix is words only: no `--flags` or `<lora:>` tags.")
    return suffix


def check_weight(weight: float) -> float:
    if not MIN_WEIGHT <= weight <= MAX_WEIGHT:
        raise InvalidRequest(f"The LoRA weight must be between {MIN_WEIGHT:g} and {MAX_WEIGHT:g}.")
    return round(weight, 4)


def style_in(prompt: str) -> tuple[str, str | None]:
    """(`prompt` without its `--style name`, the name) or (prompt, None); one style per prompt."""
    found = list(_STYLE_FLAG.finditer(prompt))
    if not found:
        return prompt, None
    if len(found) > 1:
        raise InvalidRequest("Use one `--style` per prompt.")
    name = found[0].group(1)
    if not name:
        raise InvalidRequest("`--style` needs a style name, like `--style inkwash` (see `/style list`).")
    return _STYLE_FLAG.sub(" ", prompt).strip(), name.lower()


def apply_style(prompt: str, style: StyleParts) -> str:
    """The prompt with the style's suffix after its words (before any flags) and its LoRA as a flag."""
    flag = re.search(r"(?:(?<=\s)|^)(?:--|—|–)[A-Za-z]", prompt)
    words, flags = (prompt[:flag.start()], prompt[flag.start():]) if flag else (prompt, "")
    words = words.strip().rstrip(",")
    if style.suffix:
        words = f"{words}, {style.suffix}" if words else style.suffix
    parts = [words, flags.strip()]
    if style.lora:
        parts.append(f"--lora {style.lora}:{style.lora_weight:g}")
    return " ".join(p for p in parts if p)


def sheet_box(row: int, slot: int, cell: int = SHEET_CELL) -> tuple[int, int, int, int]:
    """The pixel box of sample `slot` of style `row` on a style sheet."""
    x = GAP + LABEL_WIDTH + GAP + slot * (cell + GAP)
    y = GAP + row * (cell + GAP)
    return x, y, x + cell, y + cell


def style_sheet(rows: Sequence[tuple[str, Sequence[Image.Image]]], cell: int = SHEET_CELL) -> bytes:
    """PNG of one row per style: its name, then its samples scaled into square cells."""
    width = GAP + LABEL_WIDTH + GAP + MAX_IMAGES * (cell + GAP)
    height = GAP + max(1, len(rows)) * (cell + GAP)
    sheet = Image.new("RGB", (width, height), BACKGROUND)
    draw = ImageDraw.Draw(sheet)
    face = font(18)
    for row, (name, images) in enumerate(rows):
        y = GAP + row * (cell + GAP)
        draw.text((GAP, y + cell // 2), name, font=face, fill=TEXT, anchor="lm")
        for slot, image in enumerate(images[:MAX_IMAGES]):
            tile = ImageOps.contain(image.convert("RGB"), (cell, cell), Image.Resampling.LANCZOS)
            x0, y0, _, _ = sheet_box(row, slot, cell)
            sheet.paste(tile, (x0 + (cell - tile.width) // 2, y0 + (cell - tile.height) // 2))
    buf = io.BytesIO()
    sheet.save(buf, format="PNG", compress_level=3)
    return buf.getvalue()
