"""Members' uploads: refused from the header before decoding, bounded while decoding, cut to size."""

from __future__ import annotations

import io
import struct
import zlib

import pytest
from PIL import Image

from generation.errors import InvalidRequest
from generation.images import MAX_UPLOAD_PIXELS, decode_upload, encode_upload, fit_pixels


def _chunk(kind: bytes, body: bytes) -> bytes:
    return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))


def png_claiming(width: int, height: int, idat: bytes = b"") -> bytes:
    """A PNG whose header claims width x height (1-bit grey), with whatever pixel data is given."""
    header = struct.pack(">IIBBBBB", width, height, 1, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + _chunk(b"IHDR", header) + _chunk(b"IDAT", idat) + _chunk(b"IEND", b"")


def blank_png(width: int, height: int) -> bytes:
    """A real, valid, all-black 1-bit PNG of that size that compresses to almost nothing."""
    row = b"\x00" * (1 + (width + 7) // 8)
    compressor = zlib.compressobj(9)
    data = b"".join(compressor.compress(row) for _ in range(height)) + compressor.flush()
    return png_claiming(width, height, data)


def _png(size: tuple[int, int], fmt: str = "PNG") -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", size, (30, 160, 90)).save(buf, format=fmt)
    return buf.getvalue()


@pytest.mark.parametrize("side", [30000, 13000, 4200])
def test_a_header_over_the_pixel_cap_is_refused_before_decoding(side: int) -> None:
    # 30000² trips PIL's own bomb error, 13000² only its warning, 4200² neither: all over our 16 MP.
    data = png_claiming(side, side)
    assert len(data) < 100
    with pytest.raises(InvalidRequest, match="too large"):
        decode_upload(data, fit_to=1024 * 1024)


def test_pil_bomb_warning_is_an_error_even_under_a_looser_cap() -> None:
    # A caller's cap above PIL's guard (89 MP) still never decodes a bomb.
    with pytest.raises(InvalidRequest, match="too many pixels"):
        decode_upload(png_claiming(13000, 13000), fit_to=1024 * 1024, max_pixels=10**9)


def test_a_small_file_with_huge_dimensions_is_refused() -> None:
    data = blank_png(8000, 6000)  # 48 MP of real pixel data in a few KiB
    assert len(data) < 64 * 1024
    with pytest.raises(InvalidRequest, match="8000×6000"):
        decode_upload(data, fit_to=1024 * 1024)


@pytest.mark.parametrize("fmt", ["PNG", "JPEG"])
def test_a_large_legal_image_is_cut_to_the_models_limit(fmt: str) -> None:
    image = decode_upload(_png((3000, 2000), fmt), fit_to=1024 * 1024)
    assert image.mode == "RGB" and image.size == fit_pixels((3000, 2000), 1024 * 1024)
    assert image.size[0] * image.size[1] <= 1024 * 1024 and abs(image.size[0] / image.size[1] - 1.5) < 0.01
    assert Image.open(io.BytesIO(encode_upload(image))).size == image.size


def test_small_images_are_kept_as_they_are_and_junk_is_refused() -> None:
    assert decode_upload(_png((300, 200)), fit_to=1024 * 1024).size == (300, 200)
    with pytest.raises(InvalidRequest, match="not an image"):
        decode_upload(b"GIF89a but not really", fit_to=1024 * 1024)
    with pytest.raises(InvalidRequest, match="not an image"):
        decode_upload(png_claiming(64, 64), fit_to=1024 * 1024)  # header only, no pixels
    assert MAX_UPLOAD_PIXELS == 4096 * 4096
