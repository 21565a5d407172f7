"""PNG output carrying its render parameters, and the grid shown for a multi-image job."""

from __future__ import annotations

import io
import json
from collections.abc import Sequence
from typing import Any

from PIL import Image, PngImagePlugin

from generation.request import RenderRequest

# Our own chunk holds JSON; `parameters` holds the A1111-style text other tools already read.
PARAMS_KEY = "atelier"
A1111_KEY = "parameters"


def image_params(request: RenderRequest, index: int) -> dict[str, Any]:
    """What one image of `request` carries in its PNG: enough to reproduce it alone."""
    return {
        "prompt": request.prompt,
        "negative": request.negative,
        "seed": request.seeds[index],
        "steps": request.steps,
        "guidance": request.guidance,
        "sampler": request.sampler,
        "width": request.width,
        "height": request.height,
        "model": request.model,
        "kind": str(request.kind),
        "strength": request.strength,
    }


def _a1111_text(params: dict[str, Any]) -> str:
    lines = [str(params.get("prompt", ""))]
    if params.get("negative"):
        lines.append(f"Negative prompt: {params['negative']}")
    fields = [
        f"Steps: {params.get('steps')}",
        f"Sampler: {params.get('sampler')}",
        f"CFG scale: {params.get('guidance')}",
        f"Seed: {params.get('seed')}",
        f"Size: {params.get('width')}x{params.get('height')}",
        f"Model: {params.get('model')}",
    ]
    if params.get("strength") is not None:
        fields.append(f"Denoising strength: {params['strength']}")
    lines.append(", ".join(fields))
    return "\n".join(lines)


def encode_png(image: Image.Image, params: dict[str, Any]) -> bytes:
    """PNG bytes of `image` with `params` stored in text chunks (JSON and A1111-style)."""
    info = PngImagePlugin.PngInfo()
    info.add_itxt(PARAMS_KEY, json.dumps(params, ensure_ascii=False, sort_keys=True))
    info.add_itxt(A1111_KEY, _a1111_text(params))
    buf = io.BytesIO()
    image.convert("RGB").save(buf, format="PNG", pnginfo=info, compress_level=4)
    return buf.getvalue()


def read_png_params(data: bytes) -> dict[str, Any]:
    """The parameters stored by encode_png, or {} for a PNG (or any image) without them."""
    try:
        with Image.open(io.BytesIO(data)) as img:
            text = getattr(img, "text", None) or img.info
            raw = text.get(PARAMS_KEY)
    except (OSError, ValueError, SyntaxError):
        return {}
    if not raw:
        return {}
    try:
        params = json.loads(raw)
    except json.JSONDecodeError:
        return {}
    return params if isinstance(params, dict) else {}


def make_grid(images: Sequence[Image.Image]) -> Image.Image:
    """2x2 for four, one row for two or three, the image itself for one."""
    if not images:
        raise ValueError("make_grid needs at least one image")
    if len(images) == 1:
        return images[0].copy()
    w, h = images[0].size
    cols = 2 if len(images) == 4 else len(images)
    rows = (len(images) + cols - 1) // cols
    grid = Image.new("RGB", (cols * w, rows * h))
    for i, image in enumerate(images):
        tile = image if image.size == (w, h) else image.resize((w, h), Image.Resampling.LANCZOS)
        grid.paste(tile.convert("RGB"), ((i % cols) * w, (i // cols) * h))
    return grid
