from __future__ import annotations

import io
from pathlib import Path

import pytest
from PIL import Image

from storage import BlobStore


def _png(color: tuple[int, int, int], size: tuple[int, int] = (300, 200)) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", size, color).save(buf, format="PNG")
    return buf.getvalue()


def test_put_is_content_addressed_and_leaves_no_temp_files(tmp_path: Path) -> None:
    store = BlobStore(tmp_path / "blobs")
    data = _png((200, 10, 10))
    key = store.put(data)
    assert store.put(data) == key
    assert store.read(key) == data
    assert store.path(key).is_relative_to(store.root)
    assert store.open_image(key).getpixel((5, 5)) == (200, 10, 10)
    files = [p for p in store.root.rglob("*") if p.is_file()]
    assert files == [store.path(key)]
    assert key != store.put(_png((0, 0, 255)))


@pytest.mark.parametrize(
    "key",
    [
        "../../etc/passwd",
        "../" + "a" * 64 + ".png",
        "a" * 64 + "/../../x.png",
        "/etc/passwd",
        "A" * 64 + ".png",
        "a" * 63 + ".png",
        "a" * 64 + ".png/..",
        "a" * 64 + ".p\x00g",
        "",
    ],
)
def test_crafted_keys_never_escape_the_root(tmp_path: Path, key: str) -> None:
    store = BlobStore(tmp_path / "blobs")
    (tmp_path / "secret.png").write_bytes(b"secret")
    with pytest.raises(ValueError):
        store.path(key)
    with pytest.raises(ValueError):
        store.read(key)


def test_unknown_key_reads_as_missing(tmp_path: Path) -> None:
    store = BlobStore(tmp_path)
    with pytest.raises(KeyError):
        store.read("f" * 64 + ".png")


def test_thumbnail_is_small_jpeg_and_cached(tmp_path: Path) -> None:
    store = BlobStore(tmp_path)
    key = store.put(_png((10, 200, 10), (512, 256)))
    thumb = store.thumbnail(key, 128)
    with Image.open(io.BytesIO(thumb)) as im:
        assert im.format == "JPEG"
        assert im.size == (128, 64)
        r, g, b = im.convert("RGB").getpixel((60, 30))
        assert g > 180 and r < 40 and b < 40
    assert store.thumbnail(key, 128) == thumb
    assert len(list((tmp_path / "thumbs").rglob("*.jpg"))) == 1
