"""PNG output carrying its render parameters, the grid shown for a multi-image job, and members'
uploads checked (header first) and bounded before they are decoded."""

from __future__ import annotations

import contextlib
import io
import json
import math
import warnings
from collections.abc import Iterator, Sequence
from typing import Any

from PIL import Image, PngImagePlugin

from generation.errors import InvalidRequest
from generation.loras import a1111_tags
from generation.references import describe
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
        **({"loras": [[name, weight] for name, weight in request.loras],
            "lora_hashes": request.extra.get("lora_hashes", {})} if request.loras else {}),
        # The reference images by their blob hash (the images themselves stay on this server).
        **({"references": [[role, key.split(".")[0], scale] for role, key, scale in request.references]}
           if request.references else {}),
    }


def _a1111_text(params: dict[str, Any]) -> str:
    loras = [(str(name), float(weight)) for name, weight in params.get("loras", ())]
    # A1111 keeps a LoRA in the prompt as `<lora:name:weight>` and its file's hash in `Lora hashes:`.
    lines = [" ".join(p for p in (str(params.get("prompt", "")), a1111_tags(tuple(loras))) if p)]
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
    hashes = params.get("lora_hashes") or {}
    if loras and hashes:
        listed = ", ".join(f"{n}: {hashes[n]}" for n, _ in loras if n in hashes)
        fields.append(f'Lora hashes: "{listed}"')
    references = [(str(r), str(k), float(w)) for r, k, w in params.get("references", ())]
    if references:
        fields.append(f'Image references: "{describe(tuple(references))}"')
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


def encode_grid(images: Sequence[Image.Image], request: RenderRequest) -> bytes:
    """A job's grid as the PNG the bot stores and shows (in-process and remote renders alike)."""
    params = {**image_params(request, 0), "seeds": list(request.seeds), "grid": len(images)}
    return encode_png(make_grid(images), params)


# JPEG at this quality is visually lossless for a grid, and encodes several times faster than PNG
# (bench/grid_formats.py): it is what the member sees first, while the PNGs are written.
FAST_QUALITY = 90


def encode_fast_grid(grid: Image.Image) -> bytes:
    """The grid as shown the moment the render ends (the stored PNGs follow, and replace it)."""
    buf = io.BytesIO()
    grid.convert("RGB").save(buf, format="JPEG", quality=FAST_QUALITY)
    return buf.getvalue()


# -- uploads ---------------------------------------------------------------------------------------

# A member's starting image: at most this many pixels, read from the header before anything is decoded.
# A 20 KiB PNG can claim 13000x13000 (0.5 GB as RGB); 16 MP still takes any phone photo.
MAX_UPLOAD_PIXELS = 16 * 1024 * 1024


class UploadRefused(InvalidRequest):
    """An upload that is not decoded: unreadable, or larger than we are willing to hold in memory."""


def _too_large(noun: str, what: str, max_pixels: int) -> str:
    return (f"That {noun} is too large ({what}; at most {max_pixels / 2**20:.0f} megapixels). "
            "Please send a smaller one.")


@contextlib.contextmanager
def opened_upload(data: bytes, max_pixels: int, noun: str = "image",
                  unreadable: str = "That attachment is not an image I can read.") -> Iterator[Image.Image]:
    """A member's file opened for decoding in the `with` body: its header checked against `max_pixels` before
    any pixel is decoded, PIL's decompression-bomb warning an error, and whatever goes wrong while the body
    decodes an UploadRefused in the member's words (`noun`: what the file is to them)."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(io.BytesIO(data)) as img:
                width, height = img.size
                if width <= 0 or height <= 0:
                    raise UploadRefused(f"That {noun} is empty.")
                if width * height > max_pixels:
                    raise UploadRefused(_too_large(noun, f"{width}×{height} pixels", max_pixels))
                yield img
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise UploadRefused(_too_large(noun, "too many pixels to open", max_pixels)) from exc
    except (OSError, ValueError, SyntaxError, EOFError) as exc:  # UnidentifiedImageError is an OSError
        raise UploadRefused(unreadable) from exc


def fit_pixels(size: tuple[int, int], max_pixels: int) -> tuple[int, int]:
    """`size` scaled down (never up) to at most `max_pixels`, keeping its shape."""
    width, height = size
    if width * height <= max_pixels:
        return width, height
    scale = math.sqrt(max_pixels / (width * height))
    return max(1, int(width * scale)), max(1, int(height * scale))


def decode_upload(data: bytes, fit_to: int, max_pixels: int = MAX_UPLOAD_PIXELS) -> Image.Image:
    """An uploaded image as RGB of at most `fit_to` pixels. Its header is checked against `max_pixels`
    before any pixel is decoded, and PIL's decompression-bomb warning is an error here."""
    with opened_upload(data, max_pixels) as img:
        target = fit_pixels(img.size, fit_to)
        # JPEG decodes straight at a reduced scale: a 12 MP photo never exists in full.
        img.draft("RGB", target)
        img.load()
        rgb = img.convert("RGB")
    if rgb.size != target:
        rgb = rgb.resize(target, Image.Resampling.LANCZOS)
    return rgb


def encode_upload(image: Image.Image) -> bytes:
    """PNG bytes of a decoded upload; only its pixels are kept (not the uploader's metadata)."""
    buf = io.BytesIO()
    image.save(buf, format="PNG", compress_level=4)
    return buf.getvalue()
