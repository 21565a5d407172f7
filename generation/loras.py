"""The LoRA library: `.safetensors` adapter files under ATELIER_LORA_DIR, each of one model family, and
the prompt syntax that asks for them (`--lora name:0.8`, A1111's `<lora:name:0.8>`). Textual-inversion
embeddings live in the same library and are used by writing their name (the trigger token) in a prompt.

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
from typing import Any

from generation.errors import InvalidRequest
from generation.families import FAMILIES, family_of

# A request's LoRA set: (name, weight) pairs in the order given.
LoraSet = tuple[tuple[str, float], ...]

MAX_LORAS = 4
# The largest file /admin lora add takes (an SDXL LoRA of rank 128 is ~900 MB; most are under 300 MB).
MAX_FILE_BYTES = 512 * 1024 * 1024
MIN_WEIGHT, MAX_WEIGHT = -2.0, 4.0
# A1111's inline form; the weight is optional (1.0).
INLINE_RE = re.compile(r"<lora:([^:<>\s]+)(?::([^<>\s]*))?>", re.IGNORECASE)
_NAME_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.\-]{0,63}")

# The text-conditioning width the cross-attention keys take, per family (SD1.x CLIP-L 768, SD2 OpenCLIP-H
# 1024, SDXL CLIP-L + OpenCLIP-G 2048).
_CONTEXT_WIDTHS = {768: "sd15", 1024: "sd2", 2048: "sdxl"}
# Text-encoder widths of a textual-inversion vector (SDXL's files hold `clip_l` and `clip_g`).
_EMBEDDING_WIDTHS = {768: "sd15", 1024: "sd2"}
LORA, EMBEDDING = "lora", "embedding"


@dataclass(frozen=True)
class LoraFile:
    name: str
    path: Path
    family: str | None  # None: neither the folder nor the keys tell (tried on any model)
    sha256: str
    kind: str = LORA  # or EMBEDDING: a textual-inversion embedding, used by its name in the prompt

    @property
    def short_hash(self) -> str:
        """The 12 hex digits A1111 writes in `Lora hashes:`."""
        return self.sha256[:12]


def detect_kind(path: Path) -> str:
    """EMBEDDING for a textual-inversion file (A1111's `emb_params`, SDXL's `clip_l` + `clip_g`, or one lone
    vector table), else LORA."""
    from safetensors import safe_open

    try:
        with safe_open(str(path), framework="pt") as f:
            keys = set(f.keys())
    except Exception as exc:  # SafetensorError derives from Exception only
        raise InvalidRequest(f"`{path.name}` is not a readable .safetensors file.") from exc
    if keys in ({"emb_params"}, {"clip_l", "clip_g"}) or (len(keys) == 1 and "." not in next(iter(keys))):
        return EMBEDDING
    return LORA


def detect_family(path: Path) -> str | None:
    """The family a LoRA file was trained for, from its keys: a second text encoder means SDXL; otherwise the
    input width of a cross-attention key projection (attn2.to_k's down / lora_A matrix) names it. For an
    embedding, `clip_g` means SDXL, else the vectors' width."""
    from safetensors import safe_open

    try:
        with safe_open(str(path), framework="pt") as f:
            keys = list(f.keys())
            if "clip_g" in keys:
                return "sdxl"
            if len(keys) == 1 and "." not in keys[0]:
                shape = f.get_slice(keys[0]).get_shape()
                return _EMBEDDING_WIDTHS.get(int(shape[-1])) if shape else None
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

    def check_upload(self, filename: str, size: int, family: str | None) -> None:
        """What can be refused from the file's name and declared size, before it is downloaded."""
        stem, suffix = Path(filename).stem, Path(filename).suffix.lower()
        if suffix != ".safetensors":
            raise InvalidRequest("Only `.safetensors` files are accepted (a pickled `.ckpt` / `.pt` can run "
                                 "code).")
        if size > MAX_FILE_BYTES:
            raise InvalidRequest(f"That file is too large ({MAX_FILE_BYTES // 2**20} MB at most).")
        if not _NAME_RE.fullmatch(stem):
            raise InvalidRequest("Name the file with letters, digits, `_`, `-` or `.` (up to 64), e.g. "
                                 "`ink.safetensors`.")
        if family is not None and family not in FAMILIES:
            raise InvalidRequest(f"Unknown family `{family}`: one of {', '.join(FAMILIES)}.")
        if stem in self.files():
            raise InvalidRequest(f"`{stem}` is already in the library: remove it first.")

    def add(self, data: bytes, filename: str, family: str | None = None) -> LoraFile:
        """Put an uploaded file in the library: `.safetensors` only, at most MAX_FILE_BYTES, readable, a LoRA
        or an embedding, of `family` or the family its keys tell, under a name not yet taken. Blocking (it
        hashes and writes): run it in a thread. Nothing is left behind when it refuses."""
        self.check_upload(filename, len(data), family)
        stem = Path(filename).stem
        self.root.mkdir(parents=True, exist_ok=True)
        staging = self.root / f".upload-{hashlib.sha256(data).hexdigest()[:16]}.tmp"
        try:
            staging.write_bytes(data)
            kind = detect_kind(staging)
            family = family or detect_family(staging)
            if family is None:
                raise InvalidRequest("I could not tell which model family this file is for: give `family`.")
            if kind == LORA and not _has_lora_keys(staging):
                raise InvalidRequest("That file holds no LoRA or embedding weights.")
            target = self.root / family / f"{stem}.safetensors"
            target.parent.mkdir(exist_ok=True)
            staging.replace(target)
        finally:
            staging.unlink(missing_ok=True)
        lora = self._describe(target)
        assert lora is not None
        return lora

    def remove(self, name: str) -> LoraFile:
        lora = self.get(name)
        if lora is None:
            raise InvalidRequest(f"There is no `{name}` in the library.")
        lora.path.unlink(missing_ok=True)
        return lora

    def hashes(self, loras: LoraSet) -> dict[str, str]:
        """Each LoRA's short file hash, by name (A1111's `Lora hashes:`)."""
        files = self.files()
        return {name: files[name].short_hash for name, _ in loras if name in files}

    def embeddings_in(self, texts: list[str], family: str) -> list[LoraFile]:
        """The embeddings for `family` whose trigger word (the file's name) appears in any of `texts`."""
        words = {w for text in texts for w in re.findall(r"[\w.\-]+", text)}
        return [f for f in self.files().values()
                if f.kind == EMBEDDING and f.name in words and f.family in (None, family)]

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
            kind = detect_kind(path)
        except InvalidRequest:
            return None  # a damaged file is left out of the library rather than breaking every lookup
        digest = hashlib.sha256(path.read_bytes()).hexdigest()
        lora = LoraFile(name=path.stem, path=path, family=family, sha256=digest, kind=kind)
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
        library = {n: f for n, f in self.files().items() if f.kind == LORA}
        for name in merged:
            lora = library.get(name)
            if lora is None:
                close = difflib.get_close_matches(name, list(library), n=3, cutoff=0.5)
                hint = f" Did you mean {', '.join(f'`{c}`' for c in close)}?" if close else (
                    " This server has none." if not library
                    else " Known: " + ", ".join(f"`{n}`" for n in sorted(library)[:10]) + ".")
                raise InvalidRequest(f"Unknown LoRA `{name}`.{hint}")
            if lora.family is not None and lora.family != family:
                raise InvalidRequest(
                    f"LoRA `{name}` is for {family_of(lora.family).label} models; this model is "
                    f"{family_of(family).label}."
                )
        return tuple(merged.items())


def _has_lora_keys(path: Path) -> bool:
    from safetensors import safe_open

    with safe_open(str(path), framework="pt") as f:
        return any(("lora" in k.lower() or ".alpha" in k) for k in f.keys())


def adapter_name(lora: LoraFile) -> str:
    """The name the adapter is loaded under: its content, so a file replaced under the same name is loaded
    again rather than mistaken for the old one."""
    return f"lora_{lora.sha256[:16]}"


def load_embedding(pipe: Any, embedding: LoraFile) -> None:
    """Add a textual-inversion embedding under its trigger word: to the one text encoder, or to both of an
    SDXL pipeline (`clip_l` to CLIP-L, `clip_g` to OpenCLIP-G)."""
    from safetensors.torch import load_file

    if getattr(pipe, "text_encoder_2", None) is not None:
        state = load_file(str(embedding.path))
        if not {"clip_l", "clip_g"} <= set(state):
            raise ValueError("an SDXL embedding needs clip_l and clip_g vectors")
        pipe.load_textual_inversion(state["clip_l"], token=embedding.name, text_encoder=pipe.text_encoder,
                                    tokenizer=pipe.tokenizer)
        pipe.load_textual_inversion(state["clip_g"], token=embedding.name, text_encoder=pipe.text_encoder_2,
                                    tokenizer=pipe.tokenizer_2)
        return
    pipe.load_textual_inversion(str(embedding.path), token=embedding.name)


def expand_embeddings(pipe: Any, text: str) -> str:
    """A multi-vector embedding's word becomes its tokens (`name name_1 name_2`), as diffusers' own prompt
    encoding does, so the weighted encoder in generation/prompts.py reads every vector."""
    convert = getattr(pipe, "maybe_convert_prompt", None)
    tokenizer = getattr(pipe, "tokenizer", None)
    if convert is None or tokenizer is None or not text:
        return text
    return str(convert(text, tokenizer))


def write_random_lora(pipe: Any, path: Path, seed: int, rank: int = 4) -> Path:
    """Write a LoRA for `pipe`'s UNet attention with random, nonzero up matrices (peft's default init zeroes
    them, which would make a LoRA that changes nothing), in diffusers' LoRA file format: what the tests and
    the bench use on the tiny model, offline. The pipeline is left without the adapter."""
    import torch
    from diffusers import StableDiffusionPipeline
    from diffusers.utils import convert_state_dict_to_diffusers
    from peft import LoraConfig
    from peft.utils import get_peft_model_state_dict

    torch.manual_seed(seed)
    unet = pipe.unet
    unet.add_adapter(LoraConfig(r=rank, lora_alpha=rank, init_lora_weights=False,
                                target_modules=["to_q", "to_k", "to_v", "to_out.0"]), adapter_name="make")
    layers = convert_state_dict_to_diffusers(get_peft_model_state_dict(unet, adapter_name="make"))
    path.parent.mkdir(parents=True, exist_ok=True)
    StableDiffusionPipeline.save_lora_weights(str(path.parent), unet_lora_layers=layers,
                                              weight_name=path.name, safe_serialization=True)
    unet.delete_adapters("make")
    return path
