from __future__ import annotations

import io

import pytest
from PIL import Image

from generation.images import encode_png, image_params, make_grid, read_png_params
from generation.request import RenderRequest


def _tile(color: tuple[int, int, int]) -> Image.Image:
    return Image.new("RGB", (32, 24), color)


def test_png_carries_its_parameters() -> None:
    req = RenderRequest(
        prompt="a lighthouse “at dusk”",
        negative="fog",
        model="tiny",
        width=32,
        height=24,
        steps=4,
        guidance=6.5,
        sampler="euler",
        seeds=(7, 8),
    )
    data = encode_png(_tile((10, 20, 30)), image_params(req, 1))
    params = read_png_params(data)
    assert params["prompt"] == "a lighthouse “at dusk”"
    assert (params["seed"], params["steps"], params["guidance"], params["model"]) == (8, 4, 6.5, "tiny")
    assert (params["width"], params["height"], params["negative"]) == (32, 24, "fog")
    with Image.open(io.BytesIO(data)) as img:
        assert img.getpixel((0, 0)) == (10, 20, 30)
        assert "Seed: 8" in img.text["parameters"]


def test_read_params_of_foreign_or_broken_data() -> None:
    buf = io.BytesIO()
    _tile((0, 0, 0)).save(buf, format="PNG")
    assert read_png_params(buf.getvalue()) == {}
    assert read_png_params(b"not an image") == {}


@pytest.mark.parametrize(("count", "size"), [(1, (32, 24)), (2, (64, 24)), (3, (96, 24)), (4, (64, 48))])
def test_grid_layout(count: int, size: tuple[int, int]) -> None:
    colors = [(255, 0, 0), (0, 255, 0), (0, 0, 255), (255, 255, 0)][:count]
    grid = make_grid([_tile(c) for c in colors])
    assert grid.size == size
    cols = 2 if count == 4 else count
    for i, color in enumerate(colors):
        x, y = (i % cols) * 32 + 5, (i // cols) * 24 + 5
        assert grid.getpixel((x, y)) == color
    with pytest.raises(ValueError):
        make_grid([])
