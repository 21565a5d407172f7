"""A member's Vary (Region) mask read as it means (white = repaint, or transparent = repaint), at the
image's size, and refused with a clear message when it cannot be used; the engine's inputs follow it."""

from __future__ import annotations

import io

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image

from generation.canvas import canvas_inputs, overlay
from generation.images import UploadRefused
from generation.masks import EVERYTHING, NO_AREA, attach_mask, read_mask
from generation.request import Kind, RenderRequest
from tests.generation.test_uploads import png_claiming


def encoded(image: Image.Image, fmt: str = "PNG") -> bytes:
    buf = io.BytesIO()
    image.save(buf, format=fmt)
    return buf.getvalue()


def left_white(size: tuple[int, int], mode: str = "L") -> Image.Image:
    """Black, with the left quarter white."""
    image = Image.new(mode, size, 0)
    image.paste(255 if mode == "L" else (255, 255, 255), (0, 0, size[0] // 4, size[1]))
    return image


def test_white_repaints_black_keeps_at_any_scale() -> None:
    # Drawn at half the image's size, with a grey soft edge: thresholded after the resize, hard-edged.
    small = left_white((32, 16))
    small.putpixel((8, 0), 100)  # dark grey keeps
    small.putpixel((9, 0), 200)  # light grey repaints
    mask = np.asarray(read_mask(encoded(small), (64, 32)))
    assert set(np.unique(mask)) == {0, 255}
    assert (mask[:, :14] == 255).all() and (mask[:, 20:] == 0).all()
    # RGB and JPEG masks read by lightness too.
    rgb = np.asarray(read_mask(encoded(left_white((64, 32), "RGB"), "JPEG"), (64, 32)))
    assert (rgb[:, :14] == 255).all() and (rgb[:, 20:] == 0).all()


def test_transparent_repaints_whatever_the_colours() -> None:
    # White everywhere (by colour it would repaint all); only the transparent top quarter repaints.
    rgba = Image.new("RGBA", (64, 64), (255, 255, 255, 255))
    rgba.paste((255, 255, 255, 0), (0, 0, 64, 16))
    mask = np.asarray(read_mask(encoded(rgba), (64, 64)))
    assert (mask[:16] == 255).all() and (mask[16:] == 0).all()
    # An alpha channel opaque everywhere says nothing: the colours decide.
    opaque = left_white((64, 64), "RGB").convert("RGBA")
    assert (np.asarray(read_mask(encoded(opaque), (64, 64)))[:, :16] == 255).all()


@pytest.mark.parametrize(("data", "words"), [
    (encoded(left_white((64, 32))), "draw the mask at the image's shape"),  # 2:1 for a square image
    (b"not a png at all", "not an image I can read"),
    (encoded(left_white((64, 64)))[:60], "not an image I can read"),  # cut short
    (encoded(Image.new("L", (64, 64), 0)), NO_AREA),
    (encoded(Image.new("RGBA", (64, 64), (0, 0, 0, 255))), NO_AREA),
    (encoded(Image.new("L", (64, 64), 255)), EVERYTHING),
    (png_claiming(30000, 30000), "too large"),
])
def test_unusable_masks_are_refused_with_a_reason(data: bytes, words: str) -> None:
    with pytest.raises(UploadRefused) as refused:
        read_mask(data, (64, 64))
    assert words in refused.value.user_message


def test_the_engine_repaints_exactly_the_masks_white() -> None:
    source = Image.new("RGB", (64, 64), (10, 200, 30))
    paint = read_mask(encoded(left_white((64, 64))), (64, 64))
    request = RenderRequest(prompt="p", model="tiny", width=64, height=64, steps=2, guidance=5.0,
                            sampler="euler", seeds=(1,), kind=Kind.CANVAS, source="s.png",
                            box=(0, 0, 64, 64), mask="m.png")
    image, mask = canvas_inputs(request, attach_mask(source, paint))
    assert image.mode == "RGB" and np.array_equal(np.asarray(image), np.asarray(source))
    assert np.array_equal(np.asarray(mask), np.asarray(paint))


def _distance(paint: np.ndarray) -> np.ndarray:
    """Each pixel's distance to the painted area, the larger of the row and column distances (brute force)."""
    ys, xs = np.nonzero(paint)
    rows, cols = np.indices(paint.shape)
    return np.min(np.maximum(np.abs(rows[..., None] - ys), np.abs(cols[..., None] - xs)), axis=-1)


@settings(max_examples=60, deadline=None)
@given(box=st.tuples(st.integers(0, 23), st.integers(0, 23), st.integers(1, 8), st.integers(1, 8)),
       feather=st.integers(0, 6), seed=st.integers(0, 2**16))
def test_feather_blends_only_within_its_width(box: tuple[int, int, int, int], feather: int,
                                              seed: int) -> None:
    rng = np.random.default_rng(seed)
    source = Image.fromarray(rng.integers(0, 256, (24, 24, 3), np.uint8))
    rendered = Image.fromarray(rng.integers(0, 256, (24, 24, 3), np.uint8))
    x, y, w, h = box
    mask = Image.new("L", (24, 24), 0)
    mask.paste(255, (x, y, x + w, y + h))
    paint = np.asarray(mask) == 255
    out = np.asarray(overlay(rendered, source, mask, feather))
    far = _distance(paint) > feather
    assert (out[far] == np.asarray(source)[far]).all()  # farther than the feather: the source, exactly
    assert (out[paint] == np.asarray(rendered)[paint]).all()  # the mask itself: the render, exactly
    near = ~far & ~paint
    if feather and near.any():  # the band between: a blend of both
        blend = out[near].astype(int)
        src, ren = np.asarray(source)[near].astype(int), np.asarray(rendered)[near].astype(int)
        assert ((blend >= np.minimum(src, ren) - 1) & (blend <= np.maximum(src, ren) + 1)).all()
        assert not (blend == src).all()


@settings(max_examples=150, deadline=None)
@given(data=st.one_of(st.binary(max_size=300), st.builds(lambda b: encoded(left_white((16, 16)))[:b],
                                                          st.integers(0, 200))),
       side=st.integers(1, 64))
def test_any_bytes_give_a_mask_or_a_clear_refusal(data: bytes, side: int) -> None:
    try:
        mask = read_mask(data, (side, side))
    except UploadRefused as refused:
        assert refused.user_message
    else:
        assert mask.size == (side, side) and set(np.unique(np.asarray(mask))) == {0, 255}
