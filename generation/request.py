"""The render request: plain, immutable, JSON-able data that travels from the bot into storage
and back out to the engine. Storage keeps it as JSON and never needs this type."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from enum import StrEnum
from typing import Any


class Kind(StrEnum):
    TXT2IMG = "txt2img"
    VARIATION = "variation"
    UPSCALE = "upscale"
    IMG2IMG = "img2img"
    # Zoom Out / Pan / Make Square / Vary (Region): inpaint the parent on a canvas (generation/canvas.py).
    CANVAS = "canvas"


@dataclass(frozen=True, slots=True)
class RenderRequest:
    prompt: str
    model: str
    width: int
    height: int
    steps: int
    guidance: float
    sampler: str
    # One seed per image (seed, seed+1, ...) so any single image can be reproduced alone.
    seeds: tuple[int, ...]
    kind: Kind = Kind.TXT2IMG
    negative: str = ""
    # Blob key (sha256 hex) of the source image in storage's blob store, for
    # variation / upscale / img2img. The worker resolves it to pixels; the engine takes pixels.
    source: str | None = None
    strength: float | None = None
    extra: dict[str, Any] = field(default_factory=dict)
    # Short notes for the member about their request as it will be rendered (e.g. words of a long prompt
    # the model cannot read); decided when the request is built, shown with every message of the job.
    notes: tuple[str, ...] = ()
    # Midjourney's style flags (generation/knobs.py): seamless tiles (--tile), FreeU strength (--stylize,
    # None: off) and the share of the steps after which the render stops early (--stop, percent).
    tile: bool = False
    stylize: int | None = None
    stop: int = 100
    # --chaos 0-100: per-image noise on the prompt embedding, drawn from each image's seed (knobs.py); rows
    # are independent, so it does not split batches.
    chaos: int = 0
    # LoRA adapters as (name, weight) pairs (generation/loras.py); img2img children of a job inherit them.
    loras: tuple[tuple[str, float], ...] = ()
    # Canvas jobs: where the source goes on the width x height canvas (x, y, w, h), and for Vary (Region)
    # the repainted cells (one bit per cell of generation/canvas.py's grid); None paints around the box.
    box: tuple[int, int, int, int] | None = None
    cells: int | None = None
    # Vary (Region) with a member's own mask (generation/masks.py): its blob key (black and white at the
    # source's size, white = repaint). Like `source`, the worker resolves it; cells are then None.
    mask: str | None = None
    # Canvas jobs: the width in pixels of the band outside the painted area where the render fades into the
    # source (generation/canvas.py `overlay`); 0 keeps a hard seam. Applied after the render: no batch key.
    feather: int = 0
    # Image references (generation/references.py): (role, blob key of the image, adapter scale), from --sref /
    # --cref / --oref / /blend.
    references: tuple[tuple[str, str, float], ...] = ()

    @property
    def count(self) -> int:
        return len(self.seeds)

    @property
    def batch_key(self) -> tuple[Any, ...]:
        """Requests with equal keys may share one pipeline call (guidance cannot vary inside one)."""
        return (
            self.model,
            self.width,
            self.height,
            self.steps,
            self.sampler,
            round(self.guidance, 4),
            self.kind == Kind.TXT2IMG,
            None if self.strength is None else round(self.strength, 4),
            # Each changes the shared modules or the loop of the whole call.
            self.tile,
            self.stylize,
            self.stop,
            # Adapters are switched per pipeline call: jobs with different LoRA sets never share one.
            tuple((name, round(weight, 4)) for name, weight in self.loras),
            self.kind == Kind.CANVAS,  # the inpaint pipeline
            # The IP-Adapter's scales and image embeddings are set per call: the same references or none.
            tuple((role, key, round(scale, 4)) for role, key, scale in self.references),
        )

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        data["kind"] = str(self.kind)
        data["seeds"] = list(self.seeds)
        data["notes"] = list(self.notes)
        data["loras"] = [[name, weight] for name, weight in self.loras]
        if self.box is not None:
            data["box"] = list(self.box)
        data["references"] = [list(ref) for ref in self.references]
        return data

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> RenderRequest:
        data = dict(data)
        data["kind"] = Kind(data.get("kind", Kind.TXT2IMG))
        data["seeds"] = tuple(int(s) for s in data["seeds"])
        data["guidance"] = float(data["guidance"])
        data["notes"] = tuple(str(n) for n in data.get("notes", ()))
        data["loras"] = tuple((str(name), float(weight)) for name, weight in data.get("loras", ()))
        if data.get("box") is not None:
            data["box"] = tuple(int(v) for v in data["box"])
        data["references"] = tuple((str(role), str(key), float(scale))
                                   for role, key, scale in data.get("references", ()))
        known = set(cls.__dataclass_fields__)
        return cls(**{k: v for k, v in data.items() if k in known})
