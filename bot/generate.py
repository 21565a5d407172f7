"""`atelier generate` and `atelier tiny-model`: the engine driven from the command line, no Discord.

Bad input raises InvalidRequest (the CLI prints its message and exits 2), never a traceback.
"""

from __future__ import annotations

import argparse
import hashlib
import logging
import re
import sys
from dataclasses import replace
from pathlib import Path

from PIL import Image

from bot.config import Settings
from generation.errors import InvalidRequest
from generation.request import Kind

log = logging.getLogger(__name__)


def _slug(text: str) -> str:
    slug = re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")
    return slug[:40].rstrip("-") or "image"


def _read_source(path_text: str) -> tuple[bytes, Image.Image]:
    path = Path(path_text)
    if not path.is_file():
        raise InvalidRequest(f"No such image file: {path}")
    data = path.read_bytes()
    try:
        with Image.open(path) as img:
            image = img.convert("RGB")
    except (OSError, ValueError) as exc:
        raise InvalidRequest(f"{path} is not an image I can read.") from exc
    return data, image


def generate(settings: Settings, args: argparse.Namespace) -> int:  # noqa: C901 -- one branch per offline mode (txt2img, img2img, variation, upscale)
    from bot.services import open_registry
    from generation.engine import Engine
    from generation.images import encode_png, image_params, make_grid, read_png_params
    from generation.validate import RequestDraft, build_request, upscale_of, variation_of

    modes = [m for m in (args.variation_of, args.upscale, args.image) if m]
    if len(modes) > 1:
        raise InvalidRequest("Use only one of --variation-of, --upscale and --image.")
    try:
        sources_cfg = settings.model_sources()
    except ValueError as exc:
        raise InvalidRequest(str(exc)) from exc
    model = args.model
    if model and model not in {name for name, _ in sources_cfg} and Path(model).exists():
        # `--model DIR` (or a .safetensors file): render with that model, whatever ATELIER_MODEL says.
        model = Path(model.rstrip("/")).stem or "model"
        sources_cfg = [(model, args.model), *((n, s) for n, s in sources_cfg if n != model)]
    try:
        # The same registry the bot opens, so an offline render honours every operator setting.
        registry = open_registry(settings, sources_cfg)
    except ValueError as exc:
        raise InvalidRequest(str(exc)) from exc
    draft = RequestDraft(
        prompt=args.prompt,
        negative=args.negative,
        aspect=args.aspect,
        seed=args.seed,
        steps=args.steps,
        guidance=args.guidance,
        sampler=args.sampler,
        model=model,
        count=args.count,
        strength=args.strength,
    )
    source_image: Image.Image | None = None
    if args.variation_of or args.upscale:
        data, source_image = _read_source(args.variation_of or args.upscale)
        params = read_png_params(data)
        key = hashlib.sha256(data).hexdigest()
        known = registry.names()
        # Validate the parent's options the same way a fresh request would be.
        base = build_request(
            RequestDraft(
                prompt=str(params.get("prompt") or args.prompt),
                negative=args.negative if args.negative is not None else params.get("negative") or None,
                steps=args.steps if args.steps is not None else params.get("steps"),
                guidance=args.guidance if args.guidance is not None else params.get("guidance"),
                sampler=args.sampler or params.get("sampler"),
                model=model or (params.get("model") if params.get("model") in known else None),
                seed=args.seed if args.seed is not None else params.get("seed"),
            ),
            registry,
        )
        parent = replace(base, width=source_image.width, height=source_image.height, seeds=base.seeds[:1])
        if args.upscale:
            request = upscale_of(parent, 0, key, family=registry.spec(parent.model).family)
        else:
            request = variation_of(parent, 0, args.strong, key, seed=args.seed, count=args.count or 1)
    elif args.image:
        data, source_image = _read_source(args.image)
        draft.kind = Kind.IMG2IMG
        draft.source = hashlib.sha256(data).hexdigest()
        request = build_request(draft, registry, source_size=source_image.size)
    else:
        request = build_request(draft, registry)

    engine = Engine(registry)
    total = [0]

    def progress(step: int, steps: int, _previews: list[Image.Image]) -> None:
        if sys.stderr.isatty():
            print(f"\rstep {step}/{steps}", end="", file=sys.stderr, flush=True)
        total[0] = steps

    sources = [source_image] if source_image is not None else None
    images = engine.render([request], sources, on_progress=progress)[0]
    if sys.stderr.isatty() and total[0]:
        print(file=sys.stderr)

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    stem = f"{_slug(request.prompt)}-{request.kind}"
    written: list[Path] = []
    for i, image in enumerate(images):
        path = out / f"{stem}-{request.seeds[i]}.png"
        path.write_bytes(encode_png(image, image_params(request, i)))
        written.append(path)
    if len(images) > 1:
        grid_path = out / f"{stem}-{request.seeds[0]}-grid.png"
        grid_path.write_bytes(encode_png(make_grid(images), {**image_params(request, 0), "grid": True}))
        written.append(grid_path)
    for path in written:
        print(path)
    return 0


def write_tiny_model(args: argparse.Namespace) -> int:
    from generation.tiny import write_tiny_model as write

    family = getattr(args, "family", None)
    if family is not None and getattr(args, "xl", False) and family != "sdxl":
        raise InvalidRequest("--xl means --family sdxl: give only one of them.")
    target = write(Path(args.dir), xl=bool(getattr(args, "xl", False)), family=family)
    print(target)
    return 0
