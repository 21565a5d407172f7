"""Vary (Region) with a member's own mask: what a mask file means, checked before anything is stored.

A mask says what to repaint: white (or any light grey) repaints, black keeps; a PNG with transparency
repaints where it is transparent (its colours are then ignored, as in most image editors' "erase to
repaint"). The mask is thresholded after it is resized to the image, so a mask drawn at any scale with
soft brushes still cuts a hard edge; the stored mask is black and white at the image's size (the overlay
puts back every pixel it keeps, exactly).

The engine gets it as the source image's alpha channel (`attach_mask`: opaque = keep), so a mask travels
wherever a source image already travels: the local worker and the remote workers' blob stream.
"""

from __future__ import annotations

import io

from PIL import Image, ImageChops

from generation.images import MAX_UPLOAD_PIXELS, UploadRefused, opened_upload

# A mask may be drawn at another scale than the image, not at another shape: 2% covers rounding of sizes.
RATIO_TOLERANCE = 0.02
THRESHOLD = 128
NO_AREA = ("The mask has nothing to repaint: paint white (or erase to transparent) where the image should "
           "change.")
EVERYTHING = ("The mask covers the whole image, so nothing would be kept: use 🔄 or Vary (Strong) to "
              "repaint it all.")


def _paint_channel(img: Image.Image) -> Image.Image:
    """White where to repaint (L), before resizing: transparency if the file has any, else lightness."""
    if (img.mode == "P" and "transparency" in img.info) or img.mode in ("RGBA", "LA", "PA", "La", "RGBa"):
        alpha = img.convert("RGBA").getchannel("A")
        low, _ = alpha.getextrema()
        if int(low) < 255:  # type: ignore[arg-type]  # one band: (min, max) of ints  # an alpha channel that is opaque everywhere says nothing: read the colours
            return ImageChops.invert(alpha)
    return img.convert("L")


def read_mask(data: bytes, size: tuple[int, int], max_pixels: int = MAX_UPLOAD_PIXELS) -> Image.Image:
    """The uploaded mask for an image of `size`: black (keep) and white (repaint) at that size, or
    UploadRefused saying what is wrong. The header is checked before a pixel is decoded. Blocking."""
    with opened_upload(data, max_pixels, "mask", "That mask is not an image I can read (use a PNG).") as img:
        width, height = img.size
        img.load()
        paint = _paint_channel(img)
    target_w, target_h = size
    if abs((width / height) / (target_w / target_h) - 1) > RATIO_TOLERANCE:
        raise UploadRefused(f"The mask is {width}×{height} but the image is {target_w}×{target_h}: draw the "
                            "mask at the image's shape (any scale).")
    if paint.size != size:
        paint = paint.resize(size, Image.Resampling.BILINEAR)
    mask = paint.point(lambda v: 255 if v >= THRESHOLD else 0)
    low, high = mask.getextrema()
    if high == 0:
        raise UploadRefused(NO_AREA)
    if low == 255:
        raise UploadRefused(EVERYTHING)
    return mask


def encode_mask(mask: Image.Image) -> bytes:
    buf = io.BytesIO()
    mask.convert("L").save(buf, format="PNG", optimize=True)
    return buf.getvalue()


def attach_mask(source: Image.Image, mask: Image.Image) -> Image.Image:
    """The source with the mask as its alpha channel (opaque = keep, transparent = repaint): the form in
    which a masked canvas job's source reaches the engine (generation/canvas.py `canvas_inputs`)."""
    mask = mask.convert("L")
    if mask.size != source.size:
        mask = mask.resize(source.size, Image.Resampling.NEAREST)
    image = source.convert("RGB")
    image.putalpha(ImageChops.invert(mask))
    return image


def paint_of(source: Image.Image) -> Image.Image:
    """The repaint mask (white = repaint) carried by `attach_mask`'s image."""
    if source.mode != "RGBA":
        raise ValueError("a masked canvas request needs its mask attached to the source")
    return ImageChops.invert(source.getchannel("A"))
