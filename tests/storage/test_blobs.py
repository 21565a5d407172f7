from __future__ import annotations

import io
import os
import time
from pathlib import Path

import pytest
from PIL import Image

from storage import BlobStore, Database, NewImage
from tests.storage.old_schema import old_job, old_schema


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


# -- garbage collection ----------------------------------------------------------------------------

DAY = 24 * 3600.0


def _age(store: BlobStore, key: str, days: float) -> None:
    when = time.time() - days * DAY
    os.utime(store.path(key), (when, when))


async def test_sweep_removes_only_old_orphans_and_keeps_what_the_database_references(tmp_path: Path) -> None:
    store = BlobStore(tmp_path / "blobs")
    async with await Database.open(tmp_path / "atelier.db") as db:
        keys = {name: store.put(_png((i * 20, 0, 0), (8, 8))) for i, name in enumerate([
            "orphan", "young_orphan", "image", "deleted_long_ago", "deleted_just_now", "grid", "dead_grid",
            "queued_source", "refused_upload", "reference", "region_mask"])}
        for key in keys.values():
            _age(store, key, 30)
        _age(store, keys["young_orphan"], 1)  # a job may be about to reference it
        thumb_kept, thumb_orphan = store.thumbnail(keys["image"], 64), store.thumbnail(keys["orphan"], 64)
        assert thumb_kept and thumb_orphan
        for thumb in (store.root / "thumbs").rglob("*.jpg"):
            os.utime(thumb, (time.time() - 30 * DAY,) * 2)

        def job(source: str | None = None) -> dict[str, object]:
            return {"prompt": "p", "seeds": [1], **({"source": source} if source else {})}

        shown = await db.jobs.create(user_id=1, kind="txt2img", request=job(), batch_key="k")
        await db.jobs.complete(shown.id, [NewImage(0, 1, keys["image"], 8, 8),
                                          NewImage(1, 2, keys["deleted_just_now"], 8, 8)],
                               grid_blob=keys["grid"])
        gone = await db.jobs.create(user_id=1, kind="txt2img", request=job(), batch_key="k")
        await db.jobs.complete(gone.id, [NewImage(0, 1, keys["deleted_long_ago"], 8, 8)],
                               grid_blob=keys["dead_grid"])
        # A queued img2img job: its upload is referenced by nothing but the request JSON.
        await db.jobs.create(user_id=1, kind="img2img", request=job(keys["queued_source"]), batch_key="k")
        # A job's reference image (--sref): its variations need it again, long after the job ran.
        await db.jobs.create(user_id=1, kind="txt2img", batch_key="k",
                             request={**job(), "references": [["style", keys["reference"], 1.0]]})
        # A Vary (Region) job's own mask: its rerolls need it again.
        await db.jobs.create(user_id=1, kind="canvas", batch_key="k",
                             request={**job(keys["queued_source"]), "mask": keys["region_mask"]})
        [just_now] = [r for r in await db.images.for_job(shown.id) if r.blob == keys["deleted_just_now"]]
        assert await db.images.set_deleted(just_now.id)
        assert await db.images.delete_job_images(gone.id) == 1
        await db.connection.write("UPDATE images SET deleted_at = ? WHERE job_id = ?",
                                  (time.time() - 8 * DAY, gone.id))
        (store.root / "ab").mkdir(exist_ok=True)
        stale_tmp = store.root / "ab" / ".tmp-crashed"
        stale_tmp.write_bytes(b"half a file")
        os.utime(stale_tmp, (time.time() - 30 * DAY,) * 2)

        cutoff = time.time() - 7 * DAY
        result = store.sweep(await db.images.referenced_blobs(deleted_before=cutoff), cutoff)

    left = {name for name, key in keys.items() if store.exists(key)}
    assert left == {"young_orphan", "image", "deleted_just_now", "grid", "queued_source", "reference",
                    "region_mask"}
    assert result.removed == 4 + 1 + 1  # four blobs, the orphan's thumbnail, the temp file
    assert not stale_tmp.exists()
    thumbs = {p.stem for p in (store.root / "thumbs").rglob("*.jpg")}
    assert thumbs == {keys["image"].split(".")[0]}


def test_put_of_bytes_already_stored_makes_the_file_young_again(tmp_path: Path) -> None:
    # A member uploads an image identical to an old orphan: the sweep must not take it from the new job.
    store = BlobStore(tmp_path / "blobs")
    key = store.put(_png((1, 2, 3), (8, 8)))
    _age(store, key, 30)
    assert store.put(_png((1, 2, 3), (8, 8))) == key
    assert store.sweep(set(), time.time() - 7 * DAY).removed == 0
    assert store.exists(key)


async def test_migration_4_starts_the_grace_period_of_images_deleted_before_it(tmp_path: Path) -> None:
    path = tmp_path / "old.db"
    with old_schema(path, 3) as conn:  # version 3: one image deleted, with no time of deletion
        a, b = old_job(conn, 1, 0, "p", private=False, favourite=[False, False], deleted=0)
        conn.execute("UPDATE images SET blob = ? WHERE id = ?", ("a" * 64 + ".png", a))
        conn.execute("UPDATE images SET blob = ? WHERE id = ?", ("b" * 64 + ".png", b))
    async with await Database.open(path) as db:
        # Just deleted, as far as the sweep knows: kept for the grace period, then collectable.
        assert "a" * 64 + ".png" in await db.images.referenced_blobs(deleted_before=time.time() - DAY)
        assert "a" * 64 + ".png" not in await db.images.referenced_blobs(deleted_before=time.time() + DAY)
        assert "b" * 64 + ".png" in await db.images.referenced_blobs(deleted_before=time.time() + DAY)
