"""Content-addressed image files under the data dir, plus cached thumbnails.

A key is the sha256 of the bytes plus a short suffix ("<64 hex>.png"). Keys come back from the
database and from button payloads, so `path` accepts nothing but that shape and re-checks the
resolved path: a crafted key can never reach outside the root.
"""

from __future__ import annotations

import hashlib
import io
import os
import re
import tempfile
from collections.abc import Iterator, Set
from dataclasses import dataclass
from pathlib import Path

from PIL import Image

from storage.errors import CorruptBlob

_KEY = re.compile(r"^[0-9a-f]{64}(\.[a-z0-9]{1,8})?$")
_SUFFIX = re.compile(r"^(\.[a-z0-9]{1,8})?$")


def _atomic_write(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".tmp-")
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


@dataclass(frozen=True)
class SweepResult:
    removed: int = 0
    freed_bytes: int = 0
    kept: int = 0


def disk_usage(root: Path) -> int:
    """Bytes used by the files under `root` (the data dir: database, images, thumbnails, models)."""
    total = 0
    for dirpath, _dirs, files in os.walk(root):
        for name in files:
            try:
                total += os.lstat(os.path.join(dirpath, name)).st_size
            except FileNotFoundError:  # removed while we walked
                pass
    return total


class BlobStore:
    def __init__(self, root: Path) -> None:
        self.root = Path(root).resolve()
        self.root.mkdir(parents=True, exist_ok=True)

    def put(self, data: bytes, suffix: str = ".png") -> str:
        if not _SUFFIX.match(suffix):
            raise ValueError(f"bad blob suffix {suffix!r}")
        key = hashlib.sha256(data).hexdigest() + suffix
        path = self.path(key)
        # Same bytes, same key: an existing file is already right (a re-run job writes nothing new).
        # It is touched instead, so a sweep running now sees it as young and leaves it to the job
        # about to reference it.
        try:
            os.utime(path)
        except FileNotFoundError:
            _atomic_write(path, data)
        return key

    def put_as(self, key: str, data: bytes) -> str:
        """Store `data` under a key derived from something other than the bytes (a cache entry: e.g. an
        image embedding keyed by image and encoder). The caller owns the key's meaning; read_verified does
        not apply to such a blob."""
        _atomic_write(self.path(key), data)
        return key

    def path(self, key: str) -> Path:
        if not isinstance(key, str) or not _KEY.match(key):
            raise ValueError(f"not a blob key: {key!r}")
        path = (self.root / key[:2] / key[2:4] / key).resolve()
        if not path.is_relative_to(self.root):
            raise ValueError(f"blob key escapes the store: {key!r}")
        return path

    def exists(self, key: str) -> bool:
        return self.path(key).exists()

    def read(self, key: str) -> bytes:
        path = self.path(key)
        try:
            return path.read_bytes()
        except FileNotFoundError:
            raise KeyError(key) from None

    def read_verified(self, key: str) -> bytes:
        """The bytes only if they still hash to their key: KeyError when the file is gone, CorruptBlob
        when it was truncated or damaged (so a broken file is never handed on as an image)."""
        data = self.read(key)
        if hashlib.sha256(data).hexdigest() != key.split(".", 1)[0]:
            raise CorruptBlob(key)
        return data

    def open_image(self, key: str) -> Image.Image:
        with Image.open(io.BytesIO(self.read(key))) as im:
            im.load()
            return im.copy()

    def thumbnail(self, key: str, size: int = 256) -> bytes:
        """A JPEG no larger than size x size, made once and cached beside the blobs."""
        if not 16 <= size <= 2048:
            raise ValueError("thumbnail size must be between 16 and 2048")
        source = self.path(key)
        thumb = (self.root / "thumbs" / str(size) / key[:2] / (key.split(".")[0] + ".jpg")).resolve()
        if thumb.exists():
            return thumb.read_bytes()
        try:
            im = Image.open(source)
        except FileNotFoundError:
            raise KeyError(key) from None
        with im:
            rgb = im.convert("RGB")
        rgb.thumbnail((size, size), Image.Resampling.LANCZOS)
        buf = io.BytesIO()
        rgb.save(buf, format="JPEG", quality=85)
        data = buf.getvalue()
        _atomic_write(thumb, data)
        return data

    # -- garbage collection ----------------------------------------------------------------------

    def _files(self) -> Iterator[Path]:
        for dirpath, _dirs, files in os.walk(self.root):
            for name in files:
                yield Path(dirpath) / name

    def sweep(self, referenced: Set[str], older_than: float) -> SweepResult:
        """Remove blobs not in `referenced` whose file is older than `older_than` (a timestamp), the
        thumbnails of blobs that are gone, and temp files a crash left behind. A younger file is never
        removed: it may belong to a job being created right now (put() refreshes the time of a blob it
        finds already there). Ask the database for `referenced` before calling this."""
        stems = {key.split(".")[0] for key in referenced}
        removed = freed = kept = 0
        for path in self._files():
            name = path.name
            if name.startswith(".tmp-"):
                orphan = True
            elif path.relative_to(self.root).parts[0] == "thumbs":
                orphan = path.stem not in stems  # made again on demand if it was needed after all
            elif _KEY.match(name):
                orphan = name not in referenced
            else:
                continue  # not ours: leave it alone
            if not orphan:
                kept += 1
                continue
            try:
                # Checked last, right before the unlink, to keep the window with put() small.
                stat = path.stat()
                if stat.st_mtime >= older_than:
                    kept += 1
                    continue
                path.unlink()
            except FileNotFoundError:
                continue
            removed += 1
            freed += stat.st_size
        return SweepResult(removed, freed, kept)
