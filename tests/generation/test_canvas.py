"""Canvas actions: the size arithmetic as properties, the mask, and real inpaint renders whose untouched
pixels are the source's own."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import numpy as np
import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st
from PIL import Image

from generation.canvas import (
    ALL_CELLS,
    GRID,
    PANS,
    CanvasAction,
    canvas_inputs,
    canvas_of,
    cell_box,
    plan,
    prepare,
)
from generation.errors import InvalidRequest
from generation.families import FAMILIES
from generation.request import Kind, RenderRequest
from generation.validate import ASPECTS, max_pixels

MULTIPLES = sorted({f.multiple for f in FAMILIES.values()})
CAPS = sorted({max_pixels(name) for name in FAMILIES})

sides = st.integers(min_value=64, max_value=2048).map(lambda v: v - v % 8)
zooms = st.sampled_from([1.5, 2.0]) | st.floats(min_value=1.0, max_value=2.0, allow_nan=False)
aspects = st.none() | st.sampled_from(ASPECTS)


def _fits(p: Any, multiple: int, cap: int) -> None:
    x, y, w, h = p.box
    assert p.width % multiple == 0 and p.height % multiple == 0
    assert p.width * p.height <= cap
    assert 0 <= x and 0 <= y and x + w <= p.width and y + h <= p.height and w > 0 and h > 0


def _ratio(aspect: str) -> float:
    a, b = (int(v) for v in aspect.split(":"))
    return a / b


@settings(max_examples=300, deadline=None)
@given(sides, sides, zooms, aspects, st.sampled_from(MULTIPLES), st.sampled_from(CAPS))
@example(1024, 1024, 2.0, None, 8, 1024 * 1024)  # a zoom of an upscale: scaled down to the cap
@example(512, 512, 1.5, None, 8, 1024 * 1024)
def test_zoom_contains_the_source_at_the_zoom_and_aspect(w: int, h: int, zoom: float, aspect: str | None,
                                                         multiple: int, cap: int) -> None:
    if w * h > cap or max(w / h, h / w) > 3:
        return
    p = plan((w, h), CanvasAction.ZOOM, multiple=multiple, max_pixels=cap, zoom=zoom, aspect=aspect)
    _fits(p, multiple, cap)
    x, y, bw, bh = p.box
    # The canvas is the zoom of the source on each side (or more, for the aspect), up to rounding.
    assert p.width / bw >= zoom - 0.05 and p.height / bh >= zoom - 0.05
    if aspect is None:
        assert abs(p.width / bw - p.height / bh) < 0.1 + 2 * multiple / min(bw, bh)
    else:
        # Each side is off by less than one multiple from the exact aspect.
        assert abs(p.width - p.height * _ratio(aspect)) <= multiple * (1 + _ratio(aspect)) + 1
    # Centred: the borders on opposite sides differ by rounding only.
    assert abs(x - (p.width - x - bw)) <= multiple + 2 and abs(y - (p.height - y - bh)) <= multiple + 2
    if p.note is None:
        assert (bw, bh) == (w, h)  # kept 1:1
    else:
        assert "scaled down" in p.note and bw <= w and bh <= h


@settings(max_examples=300, deadline=None)
@given(sides, sides, st.sampled_from(PANS), st.sampled_from(MULTIPLES), st.sampled_from(CAPS))
@example(1024, 1024, CanvasAction.PAN_LEFT, 8, 1024 * 1024)
def test_pan_extends_one_side_by_half_and_keeps_the_opposite_edge(w: int, h: int, action: CanvasAction,
                                                                  multiple: int, cap: int) -> None:
    if w * h > cap or max(w / h, h / w) > 3:
        return
    p = plan((w, h), action, multiple=multiple, max_pixels=cap)
    _fits(p, multiple, cap)
    x, y, bw, bh = p.box
    horizontal = action in (CanvasAction.PAN_LEFT, CanvasAction.PAN_RIGHT)
    # The panned side grows by half, the other keeps the source's (each within one multiple of rounding):
    # the aspect is rewritten, 1.5x wider (or taller) than the source's.
    grown, kept = ((p.width, bw), (p.height, bh)) if horizontal else ((p.height, bh), (p.width, bw))
    assert abs(grown[0] - 1.5 * grown[1]) <= multiple + 2
    assert 0 <= kept[0] - kept[1] <= multiple + 2
    # The new strip is on the side panned towards.
    if action == CanvasAction.PAN_LEFT:
        assert x + bw == p.width and x > 0
    elif action == CanvasAction.PAN_RIGHT:
        assert x == 0
    elif action == CanvasAction.PAN_UP:
        assert y + bh == p.height and y > 0
    else:
        assert y == 0


@settings(max_examples=200, deadline=None)
@given(sides, sides, st.sampled_from(MULTIPLES), st.sampled_from(CAPS))
def test_make_square_is_square_around_the_centred_source_and_refused_when_square(
        w: int, h: int, multiple: int, cap: int) -> None:
    if w * h > cap or max(w / h, h / w) > 3:
        return
    if w == h:
        with pytest.raises(InvalidRequest, match="already square"):
            plan((w, h), CanvasAction.SQUARE, multiple=multiple, max_pixels=cap)
        return
    p = plan((w, h), CanvasAction.SQUARE, multiple=multiple, max_pixels=cap)
    _fits(p, multiple, cap)
    assert p.width == p.height
    _, _, bw, bh = p.box
    assert max(bw, bh) >= p.width - multiple - 2  # the long side spans the canvas


@given(st.floats(allow_nan=True) | st.floats(max_value=0.999) | st.floats(min_value=2.001))
def test_zoom_out_of_range_is_a_clear_error(zoom: float) -> None:
    if 1.0 <= zoom <= 2.0:
        return
    with pytest.raises(InvalidRequest, match="Zoom goes from 1 to 2"):
        plan((512, 512), CanvasAction.ZOOM, multiple=8, max_pixels=1024 ** 2, zoom=zoom)


@given(st.text(max_size=12))
def test_any_aspect_text_is_a_plan_or_a_clear_error(aspect: str) -> None:
    try:
        p = plan((512, 512), CanvasAction.ZOOM, multiple=8, max_pixels=1024 ** 2, zoom=1.5, aspect=aspect)
    except InvalidRequest as exc:
        assert str(exc)
    else:
        assert p.width * p.height <= 1024 ** 2


@given(st.integers(min_value=1, max_value=ALL_CELLS), st.sampled_from([(64, 64), (96, 64), (512, 768)]))
def test_the_region_mask_is_white_exactly_on_the_chosen_cells(cells: int, size: tuple[int, int]) -> None:
    source = Image.new("RGB", size, (10, 20, 30))
    _, mask = prepare(source, plan_for_region(size), cells)
    m = np.asarray(mask)
    for index in range(GRID * GRID):
        left, top, right, bottom = cell_box(index, size)
        want = 255 if cells >> index & 1 else 0
        assert (m[top:bottom, left:right] == want).all()


def plan_for_region(size: tuple[int, int]) -> Any:
    from generation.canvas import region_plan

    return region_plan(size, 1)


def _parent(width: int = 64, height: int = 64) -> RenderRequest:
    return RenderRequest(prompt="a lighthouse at dusk", model="tiny", width=width, height=height, steps=3,
                         guidance=7.0, sampler="euler", seeds=(5, 6, 7, 8))


def test_canvas_requests_survive_json_and_keep_their_own_batch() -> None:
    req = canvas_of(_parent(), 1, "k" * 64, CanvasAction.PAN_LEFT, family="sd15", seed=3)
    assert req.kind == Kind.CANVAS and req.seeds == (3, 4, 5, 6) and req.strength == 1.0
    assert (req.width, req.height) == (96, 64) and req.box == (32, 0, 64, 64)
    assert RenderRequest.from_json(req.to_json()) == req
    variation = RenderRequest.from_json({**req.to_json(), "kind": "variation", "box": None})
    assert variation.batch_key != req.batch_key
    with pytest.raises(InvalidRequest, match="no image 5"):
        canvas_of(_parent(), 4, "k", CanvasAction.ZOOM, family="sd15")


def _px(image: Image.Image) -> np.ndarray:
    return np.asarray(image.convert("RGB"), dtype=np.int16)


def _source() -> Image.Image:
    # A pattern the VAE cannot reproduce exactly, so an overlay that did not happen would show.
    rng = np.random.default_rng(3)
    return Image.fromarray(rng.integers(0, 256, (64, 64, 3), dtype=np.uint8))


@pytest.mark.parametrize("action", [CanvasAction.ZOOM, CanvasAction.PAN_UP, CanvasAction.PAN_RIGHT])
def test_outpaint_keeps_the_source_pixels_and_paints_the_border(tiny_engine: Any,
                                                                action: CanvasAction) -> None:
    source = _source()
    req = canvas_of(_parent(), 0, "src", action, family="sd15", seed=11, count=2, zoom=1.5)
    images = tiny_engine.render([req], [source])[0]
    x, y, w, h = req.box  # type: ignore[misc]
    image, mask = canvas_inputs(req, source)
    border = np.asarray(mask) == 255
    for out in images:
        assert out.size == (req.width, req.height)
        px = _px(out)
        assert (px[y:y + h, x:x + w] == _px(source)).all()  # untouched pixels: identical
        assert np.abs(px[border] - _px(image)[border]).max() > 10  # the border was painted
    assert np.abs(_px(images[0]) - _px(images[1])).max() > 10  # each seed its own


def test_vary_region_repaints_only_the_chosen_cells(tiny_engine: Any) -> None:
    source = _source()
    cells = 0b0000_0000_0110_0110  # the 2x2 block right of the top-left cell
    req = canvas_of(_parent(), 0, "src", None, family="sd15", cells=cells, seed=4, count=1)
    out = tiny_engine.render([req], [source])[0][0]
    chosen = np.asarray(canvas_inputs(req, source)[1]) == 255
    px, src = _px(out), _px(source)
    assert (px[~chosen] == src[~chosen]).all()
    assert np.abs(px[chosen] - src[chosen]).max() > 10


def test_a_canvas_too_large_for_the_family_is_scaled_down_with_a_note() -> None:
    req = canvas_of(_parent(1024, 1024), 0, "src", CanvasAction.ZOOM, family="sd15")
    assert req.width * req.height <= max_pixels("sd15")
    assert req.box is not None and req.box[2] == 512 and req.notes and "scaled down" in req.notes[-1]


def test_a_named_9_channel_inpaint_checkpoint_paints_the_canvas(tiny_engine: Any, tmp_path: Any) -> None:
    from generation.engine import Engine
    from generation.errors import RenderError
    from generation.models import ModelRegistry
    from generation.tiny import write_tiny_inpaint_model

    folder = write_tiny_inpaint_model(tmp_path / "tiny-inpaint")
    registry = ModelRegistry([("tiny", "tiny?inpaint=painter"), ("painter", str(folder))],
                             tiny_engine.registry.data_dir, device="cpu")
    engine = Engine(registry)
    source = _source()
    req = canvas_of(_parent(), 0, "src", CanvasAction.ZOOM, family="sd15", seed=11, count=1, zoom=1.5)
    nine = engine.render([req], [source])[0][0]
    four = tiny_engine.render([req], [source])[0][0]  # the same model without `?inpaint=`
    x, y, w, h = req.box  # type: ignore[misc]
    assert (_px(nine)[y:y + h, x:x + w] == _px(source)).all()
    assert np.abs(_px(nine) - _px(four)).max() > 10  # the 9-channel checkpoint painted the border
    # The inpaint model paints canvases only: a txt2img on it is refused with a reason.
    with pytest.raises(RenderError, match="inpaint model"):
        engine.render([replace(_parent(), model="painter", kind=Kind.TXT2IMG)])
    with pytest.raises(ValueError, match="not another configured model"):
        ModelRegistry([("tiny", "tiny?inpaint=nobody")], tmp_path, device="cpu")
