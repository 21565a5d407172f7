"""The LoRA library: `.safetensors` adapter files under ATELIER_LORA_DIR, each of one model family, and
the prompt syntax that asks for them (`--lora name:0.8`, A1111's `<lora:name:0.8>`).

A file's family comes from its subfolder when that is named after a family (`loras/sdxl/foo.safetensors`),
else from its keys (detect_family). The engine loads an adapter once per loaded model and switches
between sets per call (ModelRegistry.use_loras); this module only finds, checks and names the files.
"""

from __future__ import annotations

import difflib
import hashlib
import re
import threading
from dataclasses import dataclass
from pathlib import Path

from generation.errors import InvalidRequest
from generation.families import FAMILIES, family_of

# A request's LoRA set: (name, weight) pairs in the order given.
LoraSet = tuple[tuple[str, float], ...]

MAX_LORAS = 4
MIN_WEIGHT, MAX_WEIGHT = -2.0, 4.0
# A1111's inline form; the weight is optional (1.0).
INLINE_RE = re.compile(r"<lora:([^:<>\s]+)(?::([^<>\s]*))?>", re.IGNORECASE)
_NAME_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.\-]{0,63}")

# The text-conditioning width the cross-attention keys take, per family (SD1.x CLIP-L 768, SD2 OpenCLIP-H
# 1024, SDXL CLIP-L + OpenCLIP-G 2048).
_CONTEXT_WIDTHS = {768: "sd15", 1024: "sd2", 2048: "sdxl"}


@dataclass(frozen=True)
class LoraFile:
    name: str
    path: Path
    family: str | None  # None: neither the folder nor the keys tell (tried on any model)
    sha256: str

    @property
    def short_hash(self) -> str:
        """The 12 hex digits A1111 writes in `Lora hashes:`."""
        return self.sha256[:12]


def detect_family(path: Path) -> str | None:
    """The family a LoRA file was trained for, from its keys: a second text encoder means SDXL; otherwise the
    input width of a cross-attention key projection (attn2.to_k's down / lora_A matrix) names it."""
    from safetensors import safe_open

    try:
        with safe_open(str(path), framework="pt") as f:
            keys = list(f.keys())
            if any("text_encoder_2." in k or k.startswith("lora_te2_") for k in keys):
                return "sdxl"
            for key in keys:
                if ("attn2.to_k" in key or "attn2_to_k" in key) and ("lora_A" in key or "lora_down" in key
                                                                     or ".down." in key):
                    shape = f.get_slice(key).get_shape()
                    if len(shape) == 2:
                        return _CONTEXT_WIDTHS.get(int(shape[1]))
    except Exception as exc:  # SafetensorError derives from Exception only
        raise InvalidRequest(f"`{path.name}` is not a readable .safetensors file.") from exc
    return None


def parse_lora(raw: str, flag: str = "--lora") -> tuple[str, float]:
    """`name` or `name:0.8` -> (name, weight)."""
    name, _, weight_raw = raw.strip().partition(":")
    if not _NAME_RE.fullmatch(name):
        raise InvalidRequest(f"`{flag}` needs a LoRA name like `{flag} name:0.8`.")
    weight = 1.0
    if weight_raw:
        try:
            weight = float(weight_raw)
        except ValueError:
            raise InvalidRequest(f"LoRA `{name}`: the weight must be a number like 0.8.") from None
        if not MIN_WEIGHT <= weight <= MAX_WEIGHT:
            raise InvalidRequest(
                f"LoRA `{name}`: the weight must be between {MIN_WEIGHT:g} and {MAX_WEIGHT:g}."
            )
    return name, round(weight, 4)


def strip_inline(prompt: str) -> tuple[str, list[tuple[str, float]]]:
    """Take A1111's `<lora:name:weight>` tags out of `prompt` (they are not words for the model)."""
    found = [parse_lora(f"{m.group(1)}:{m.group(2) or ''}".rstrip(":"), "<lora:>") for m in
             INLINE_RE.finditer(prompt)]
    return INLINE_RE.sub(" ", prompt), found


def a1111_tags(loras: LoraSet) -> str:
    """`<lora:name:0.8>` for each LoRA: the form A1111 and the tools that read its parameters understand."""
    return " ".join(f"<lora:{name}:{weight:g}>" for name, weight in loras)


class LoraLibrary:
    """The files under one folder, rescanned when asked (an admin may add files while the bot runs); the
    hash and key-based family of a file are computed once per (size, mtime)."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root)
        self._cache: dict[Path, tuple[tuple[int, int], LoraFile]] = {}
        self._lock = threading.Lock()

    def files(self) -> dict[str, LoraFile]:
        """Every LoRA by name (the file's stem); a name in two folders keeps the first in sorted order."""
        found: dict[str, LoraFile] = {}
        if not self.root.is_dir():
            return found
        for path in sorted(self.root.rglob("*.safetensors")):
            lora = self._describe(path)
            if lora is not None:
                found.setdefault(lora.name, lora)
        return found

    def get(self, name: str) -> LoraFile | None:
        return self.files().get(name)

    def _describe(self, path: Path) -> LoraFile | None:
        try:
            stat = path.stat()
        except OSError:
            return None
        stamp = (stat.st_size, stat.st_mtime_ns)
        with self._lock:
            cached = self._cache.get(path)
            if cached is not None and cached[0] == stamp:
                return cached[1]
        folder = path.parent.name if path.parent != self.root else None
        try:
            family = folder if folder in FAMILIES else detect_family(path)
        except InvalidRequest:
            return None  # a damaged file is left out of the library rather than breaking every lookup
        digest = hashlib.sha256(path.read_bytes()).hexdigest()
        lora = LoraFile(name=path.stem, path=path, family=family, sha256=digest)
        with self._lock:
            self._cache[path] = (stamp, lora)
        return lora

    def resolve(self, loras: list[tuple[str, float]], family: str) -> LoraSet:
        """Check that every named LoRA exists and fits a model of `family`; merge repeats (the last weight
        wins). Raises InvalidRequest with close names for an unknown one."""
        if not loras:
            return ()
        merged: dict[str, float] = {}
        for name, weight in loras:
            merged[name] = weight
        if len(merged) > MAX_LORAS:
            raise InvalidRequest(f"At most {MAX_LORAS} LoRAs per prompt.")
        library = self.files()
        for name in merged:
            lora = library.get(name)
            if lora is None:
                close = difflib.get_close_matches(name, list(library), n=3, cutoff=0.5)
                hint = f" Did you mean {', '.join(f'`{c}`' for c in close)}?" if close else (
                    " This server has none." if not library else " `/lora list` shows them.")
                raise InvalidRequest(f"Unknown LoRA `{name}`.{hint}")
            if lora.family is not None and lora.family != family:
                raise InvalidRequest(
                    f"LoRA `{name}` is for {family_of(lora.family).label} models; this model is "
                    f"{family_of(family).label}."
                )
        return tuple(merged.items())


def adapter_name(lora: LoraFile) -> str:
    """The name the adapter is loaded under: its content, so a file replaced under the same name is loaded
    again rather than mistaken for the old one."""
    return f"lora_{lora.sha256[:16]}"
