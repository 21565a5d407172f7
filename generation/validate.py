"""From what a user typed to a validated RenderRequest: aspect sizes, inline flags, every bound.

Every failure is an InvalidRequest whose message a Discord user understands; nothing else escapes.
"""

from __future__ import annotations

import math
import re
import secrets
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any

from generation.errors import InvalidRequest
from generation.families import FAMILIES, family_of
from generation.knobs import MAX_CHAOS, MAX_STYLIZE
from generation.loras import parse_lora, strip_inline
from generation.prompts import cut_notes, multi_error, tokenizer_for_notes
from generation.references import IMAGE, IMAGE_FLAGS, NOT_CONFIGURED, WEIGHT_FLAGS, build_references
from generation.request import Kind, RenderRequest
from generation.samplers import SAMPLER_NAMES, normalize_sampler, sampler_label, supports_zero_snr
from generation.wildcards import fill_wildcards

if TYPE_CHECKING:
    from generation.models import ModelCatalog

__all__ = [
    "ASPECTS",
    "FAMILY_BASE",
    "IMG2IMG_STRENGTH",
    "MAX_SEED",
    "SAMPLER_NAMES",
    "STRONG_STRENGTH",
    "SUBTLE_STRENGTH",
    "UPSCALE_STRENGTH",
    "Limits",
    "RequestDraft",
    "build_request",
    "expand_prompt",
    "flag_matches",
    "is_builtin_flag",
    "max_pixels",
    "parse_flags",
    "size_for",
    "upscale_of",
    "variation_of",
]

ASPECTS: tuple[str, ...] = ("1:1", "3:2", "2:3", "4:3", "3:4", "16:9", "9:16")
# Side of the square each family was trained around; other aspects keep about the same area.
FAMILY_BASE: dict[str, int] = {name: f.base for name, f in FAMILIES.items()}
MAX_SEED = 2**32 - 1
SUBTLE_STRENGTH = 0.35
STRONG_STRENGTH = 0.65
UPSCALE_STRENGTH = 0.3
IMG2IMG_STRENGTH = 0.6
# Wider than this the models produce repeated subjects; refuse rather than render garbage.
MAX_RATIO = 3.0


@dataclass
class Limits:
    max_prompt_chars: int = 1500
    max_negative_chars: int = 1000
    max_steps: int = 80
    min_guidance: float = 0.0
    max_guidance: float = 30.0
    # Output pixels per family; 2x upscales of every aspect size still fit.
    max_pixels: dict[str, int] = field(default_factory=lambda: {n: f.max_pixels for n, f in FAMILIES.items()})
    max_count: int = 4
    min_strength: float = 0.05
    max_strength: float = 1.0


@dataclass
class RequestDraft:
    prompt: str
    negative: str | None = None
    aspect: str | None = None
    seed: int | None = None
    steps: int | None = None
    guidance: float | None = None
    sampler: str | None = None
    model: str | None = None
    count: int | None = None
    kind: Kind = Kind.TXT2IMG
    source: str | None = None  # blob key of the source image (img2img / variation / upscale)
    strength: float | None = None
    # Reference images as (role, blob key): the prompt's --sref / --cref / --oref in their order once the bot
    # has fetched them, or /blend's images (role "image").
    references: tuple[tuple[str, str], ...] = ()


# ---------------------------------------------------------------------------------------------
# Inline flags
# ---------------------------------------------------------------------------------------------

# Phones turn "--" into an em or en dash; accept those as flag starts too.
_FLAG_RE = re.compile(r"(?:(?<=\s)|^)(?:--|—|–)([A-Za-z][A-Za-z0-9_-]*)")

_FLAG_NAMES: dict[str, str] = {
    "ar": "aspect",
    "aspect": "aspect",
    "seed": "seed",
    "no": "negative",
    "steps": "steps",
    "cfg": "guidance",
    "n": "count",
    "sampler": "sampler",
    "model": "model",
    "q": "quality",
    "quality": "quality",
    "stop": "stop",
    "stylize": "stylize",
    "s": "stylize",
    "tile": "tile",
    "chaos": "chaos",
    "c": "chaos",
    "lora": "loras",
    # Image references (generation/references.py): an image flag may repeat; its weight flag may not.
    **{flag: "references" for flag in IMAGE_FLAGS},
    **{flag: flag for flag in WEIGHT_FLAGS},
}
_FLAG_HELP = ("--ar W:H, --seed N, --no a,b, --steps N, --cfg X, --n N, --sampler NAME, --model NAME, "
              "--q .5|1|2, --stop 10-100, --stylize 0-1000, --tile, --chaos 0-100, --lora NAME:WEIGHT, "
              "--sref / --cref / --oref IMAGE, --sw 0-1000, --cw 0-100, --ow 0-1000, --iw 0-3")
# --q multiplies the steps (Midjourney's quality: more time, more detail).
QUALITIES = (0.5, 1.0, 2.0)


def _int_value(flag: str, raw: str) -> int:
    if not re.fullmatch(r"[+-]?\d{1,20}", raw):
        raise InvalidRequest(f"Flag `--{flag}` needs a whole number, got `{_clip(raw)}`.")
    return int(raw)


def _float_value(flag: str, raw: str) -> float:
    try:
        value = float(raw)
    except ValueError:
        value = math.nan
    if not math.isfinite(value) or not re.fullmatch(r"[+-]?(\d+\.?\d*|\.\d+)", raw):
        raise InvalidRequest(f"Flag `--{flag}` needs a number like 7 or 6.5, got `{_clip(raw)}`.")
    return value


def _clip(text: str, limit: int = 40) -> str:
    text = text.replace("`", "'")
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _flag_value(key: str, flag: str, raw: str) -> Any:
    """The value of a one-value flag, checked."""
    if key in ("seed", "steps", "count", "stop", "stylize", "chaos"):
        return _int_value(flag, raw)
    if key in ("guidance", "quality", *WEIGHT_FLAGS):
        return _float_value(flag, raw)
    if key == "aspect":
        return _normalize_aspect(raw, flag=f"--{flag}")
    return raw


def parse_flags(prompt: str) -> tuple[str, dict[str, Any]]:
    """Strip Midjourney-style flags out of `prompt`.

    Returns the clean prompt and the options found (aspect, seed, negative, steps, guidance, count,
    sampler, model, loras). Text after a one-value flag goes back into the prompt. `--lora` may repeat, and
    A1111's `<lora:name:0.8>` counts as one too. Raises InvalidRequest naming the first unknown, repeated or
    malformed flag.
    """
    prompt, inline_loras = strip_inline(prompt)
    options: dict[str, Any] = {"loras": inline_loras} if inline_loras else {}
    matches = list(_FLAG_RE.finditer(prompt))
    if not matches:
        return " ".join(prompt.split()), options
    pieces = [prompt[: matches[0].start()]]
    for i, match in enumerate(matches):
        flag = match.group(1).lower()
        end = matches[i + 1].start() if i + 1 < len(matches) else len(prompt)
        body = prompt[match.end() : end].strip()
        key = _FLAG_NAMES.get(flag)
        if key is None:
            raise InvalidRequest(f"Unknown flag `--{_clip(flag)}`. Known flags: {_FLAG_HELP}.")
        if key in options and key not in ("loras", "references"):
            raise InvalidRequest(f"Flag `--{flag}` is given twice.")
        if key == "tile":  # a switch: what follows it is prompt text
            options[key] = True
            pieces.append(body)
            continue
        if not body:
            raise InvalidRequest(f"Flag `--{flag}` needs a value.")
        if key == "negative":
            # Everything up to the next flag, comma separated.
            items = [part.strip() for part in body.split(",") if part.strip()]
            if not items:
                raise InvalidRequest("Flag `--no` needs at least one word, like `--no cars,trees`.")
            options[key] = ", ".join(items)
            continue
        raw, _, rest = body.partition(" ")
        pieces.append(rest)
        if key == "loras":
            options.setdefault(key, []).append(parse_lora(raw))
        elif key == "references":
            options.setdefault(key, []).append((IMAGE_FLAGS[flag], raw))
        else:
            options[key] = _flag_value(key, flag, raw)
    clean = " ".join(" ".join(pieces).split())
    return clean, options


def flag_matches(text: str) -> list[re.Match[str]]:
    """Where flags start in `text` (group 1: the flag's name), as parse_flags reads them."""
    return list(_FLAG_RE.finditer(text))


def is_builtin_flag(name: str) -> bool:
    """A flag this module (or prompt expansion: --repeat / --r; the bot's --style and --p, expanded before
    validation) gives a meaning."""
    return name.lower() in _FLAG_NAMES or name.lower() in ("repeat", "r", "style", "p")


# ---------------------------------------------------------------------------------------------
# Permutations and --repeat: one prompt -> several jobs
# ---------------------------------------------------------------------------------------------

# Before the member's own queue cap (which the bot applies): no prompt expands past this.
MAX_EXPANSION = 40
MAX_REPEAT = 40
MAX_GROUPS = 20
_REPEAT_RE = re.compile(r"(?:(?<=\s)|^)(?:--|—|–)(?:repeat|r)\b\s*(\S*)", re.I)


def expand_prompt(prompt: str) -> list[str]:
    """Midjourney's permutations and repeats: `{red, blue} bird --ar {1:1, 16:9} --repeat 2` -> the 8
    prompts of its combinations, in order, each once per repeat (each becomes a job of its own). Groups
    nest (`{big {red, blue}, small}`: 3 options); a brace without its partner is text. Raises
    InvalidRequest past MAX_EXPANSION prompts or MAX_GROUPS braces, or for a bad --repeat."""
    if prompt.count("{") > MAX_GROUPS:
        # Each group rescans the prompt: bound the work done on the event loop.
        raise InvalidRequest(f"A prompt holds at most {MAX_GROUPS} {{ }} groups.")
    repeats = [m.group(1) for m in _REPEAT_RE.finditer(prompt)]
    if len(repeats) > 1:
        raise InvalidRequest("Flag `--repeat` is given twice.")
    repeat = 1
    if repeats:
        repeat = _int_value("repeat", repeats[0]) if repeats[0] else 0
        if not 1 <= repeat <= MAX_REPEAT:
            raise InvalidRequest(f"Flag `--repeat` takes a whole number from 1 to {MAX_REPEAT}.")
        prompt = " ".join(_REPEAT_RE.sub(" ", prompt).split())
    prompts: list[str] = []
    pending = [prompt]  # in order: the first is expanded next
    while pending:
        text = pending.pop(0)
        group = _first_group(text)
        if group is None:
            prompts.append(text)
        else:
            start, end = group
            pending[:0] = [text[:start] + option.strip() + text[end + 1 :]
                           for option in _top_level_split(text[start + 1 : end])]
        if (len(prompts) + len(pending)) * repeat > MAX_EXPANSION:
            raise InvalidRequest(f"That prompt makes more than {MAX_EXPANSION} jobs; use fewer options.")
    return [" ".join(p.split()) for p in prompts for _ in range(repeat)]


def _first_group(text: str) -> tuple[int, int] | None:
    """(start, end) of the first outermost {...} whose braces pair up, or None."""
    stack: list[int] = []
    pairs = []
    for i, char in enumerate(text):
        if char == "{":
            stack.append(i)
        elif char == "}" and stack:
            pairs.append((stack.pop(), i))
    return min(pairs) if pairs else None  # the earliest opening is inside no other pair


def _top_level_split(inner: str) -> list[str]:
    """`big {red, blue}, small` -> ["big {red, blue}", " small"]: commas of nested groups stay."""
    parts, depth, start = [], 0, 0
    for i, char in enumerate(inner):
        depth += (char == "{") - (char == "}")
        if char == "," and depth == 0:
            parts.append(inner[start:i])
            start = i + 1
    return [*parts, inner[start:]]


# ---------------------------------------------------------------------------------------------
# Sizes
# ---------------------------------------------------------------------------------------------


def _normalize_aspect(raw: str, flag: str = "aspect") -> str:
    match = re.fullmatch(r"\s*(\d{1,4})\s*[:x×/]\s*(\d{1,4})\s*", raw)
    if not match:
        raise InvalidRequest(f"`{flag}` must look like 16:9, got `{_clip(raw)}`.")
    w, h = int(match.group(1)), int(match.group(2))
    if w == 0 or h == 0:
        raise InvalidRequest(f"`{flag}` sides must be above zero, got `{_clip(raw)}`.")
    if max(w / h, h / w) > MAX_RATIO:
        raise InvalidRequest(f"`{flag}` {w}:{h} is too stretched; keep it within 3:1 and 1:3.")
    g = math.gcd(w, h)
    return f"{w // g}:{h // g}"


def _round8(value: float, multiple: int = 8) -> int:
    return max(multiple, round(value / multiple) * multiple)


def _floor8(value: float, multiple: int = 8) -> int:
    # Down, not nearest: the area never exceeds the family's native square, so 2x upscales fit the cap.
    # SD3 / Flux need multiples of 16 (their latents are patched 2x2).
    return max(multiple, int(value // multiple) * multiple)


def _native_area(ratio: float, family: str, native: int | None = None) -> tuple[int, int]:
    # `native`: the model's own square side (its `size=` option), else the family's.
    fam = family_of(family)
    base = native or fam.base
    return (_floor8(base * math.sqrt(ratio), fam.multiple),
            _floor8(base / math.sqrt(ratio), fam.multiple))


def size_for(aspect: str, family: str, native: int | None = None) -> tuple[int, int]:
    """Width and height (multiples of 8, 16 for SD3 / Flux) for `aspect` at about the native area: the
    model's own `native` square side or else the family's."""
    w, h = (int(x) for x in _normalize_aspect(aspect).split(":"))
    return _native_area(w / h, family, native)


def _fit_source(source_size: tuple[int, int], family: str, native: int | None = None) -> tuple[int, int]:
    sw, sh = source_size
    if sw <= 0 or sh <= 0:
        raise InvalidRequest("The source image is empty.")
    ratio = sw / sh
    if max(ratio, 1 / ratio) > MAX_RATIO:
        raise InvalidRequest("The source image is too stretched; keep it within 3:1 and 1:3.")
    return _native_area(ratio, family, native)


# ---------------------------------------------------------------------------------------------
# Building a request
# ---------------------------------------------------------------------------------------------


def _seeds(seed: int, count: int) -> tuple[int, ...]:
    # Wrap rather than overflow so seed 4294967295 with --n 4 still works.
    return tuple((seed + i) % (MAX_SEED + 1) for i in range(count))


# Over the complexity limit for now: one numbered step per option; split it in its own change.
def build_request(  # noqa: C901
    draft: RequestDraft,
    registry: ModelCatalog,
    limits: Limits | None = None,
    source_size: tuple[int, int] | None = None,
    wildcards: Mapping[str, Sequence[str]] | None = None,
) -> RenderRequest:
    """Validate `draft` into a RenderRequest; inline flags in the prompt beat explicit options.
    `wildcards`: the server's lists; each `__name__` in the prompt takes an entry drawn with the seed
    (None leaves the text as it is)."""
    limits = limits or Limits()
    if not isinstance(draft.prompt, str):
        raise InvalidRequest("The prompt must be text.")
    if len(draft.prompt) > limits.max_prompt_chars * 2:
        raise InvalidRequest(f"The prompt is too long (at most {limits.max_prompt_chars} characters).")

    # 1. Flags override the explicit options.
    prompt, flags = parse_flags(draft.prompt)
    opts: dict[str, Any] = {
        "aspect": draft.aspect,
        "seed": draft.seed,
        "steps": draft.steps,
        "guidance": draft.guidance,
        "sampler": draft.sampler,
        "model": draft.model,
        "count": draft.count,
    }
    opts.update(flags)
    negative_parts = [p for p in (draft.negative, flags.get("negative")) if p and p.strip()]
    negative = ", ".join(" ".join(p.split()) for p in negative_parts)
    seed = opts["seed"]
    if seed is None:
        seed = secrets.randbelow(MAX_SEED + 1)
    if not isinstance(seed, int) or not 0 <= seed <= MAX_SEED:
        raise InvalidRequest(f"Seed must be a whole number from 0 to {MAX_SEED}.")

    # 1b. Server wildcards, drawn with the first image's seed: the same seed repeats the same words.
    if wildcards is not None:
        prompt = fill_wildcards(prompt, wildcards, seed)

    # 2. Prompt text.
    # /blend's image prompt may stand alone, as a Midjourney blend does.
    if draft.kind == Kind.TXT2IMG and not prompt and not any(role == IMAGE for role, _ in draft.references):
        raise InvalidRequest("Write a prompt describing the picture.")
    if len(prompt) > limits.max_prompt_chars:
        raise InvalidRequest(
            f"The prompt is too long ({len(prompt)} characters, at most {limits.max_prompt_chars})."
        )
    if (multi := multi_error(prompt)) is not None:
        raise InvalidRequest(multi)
    if len(negative) > limits.max_negative_chars:
        raise InvalidRequest(
            f"The negative prompt is too long (at most {limits.max_negative_chars} characters)."
        )

    # 3. Model and its defaults.
    spec = registry.spec(opts["model"])
    fam = family_of(spec.family)
    if negative and not fam.negative:
        raise InvalidRequest(f"{fam.label} models take no negative prompt: remove it (or your default one).")
    steps = spec.default_steps if opts["steps"] is None else opts["steps"]
    guidance = spec.default_guidance if opts["guidance"] is None else opts["guidance"]
    if not isinstance(steps, int) or not 1 <= steps <= limits.max_steps:
        raise InvalidRequest(f"Steps must be between 1 and {limits.max_steps}.")
    if not isinstance(guidance, int | float) or not math.isfinite(guidance):
        raise InvalidRequest("Guidance must be a number.")
    if not limits.min_guidance <= guidance <= limits.max_guidance:
        raise InvalidRequest(f"Guidance must be between {limits.min_guidance:g} and {limits.max_guidance:g}.")
    if fam.guidance == "none":
        guidance = 0.0  # the model has no input for it (Flux schnell); one value keeps its jobs batchable

    sampler_raw = opts["sampler"]
    sampler = spec.default_sampler if sampler_raw in (None, "") else normalize_sampler(str(sampler_raw))
    if sampler is None:
        raise InvalidRequest(
            f"Unknown sampler `{_clip(str(sampler_raw))}`. Choose one of: "
            f"{', '.join(sampler_label(s) for s in fam.samplers)}."
        )
    if fam.sampler_error(sampler):
        raise InvalidRequest(str(fam.sampler_error(sampler)))
    if spec.zero_snr and not supports_zero_snr(sampler):
        raise InvalidRequest(
            f"{sampler_label(sampler)} does not work with model `{spec.name}` (a v-prediction model). "
            f"Try {sampler_label(spec.default_sampler)}."
        )

    # 4. Count (the seed was settled in step 1).
    count = 1 if opts["count"] is None else opts["count"]
    if not isinstance(count, int) or not 1 <= count <= limits.max_count:
        raise InvalidRequest(f"Count must be between 1 and {limits.max_count}.")

    # 5. Size, source and strength.
    strength: float | None = None
    if draft.kind == Kind.TXT2IMG:
        width, height = size_for(opts["aspect"] or "1:1", spec.family, spec.size)
        if draft.strength is not None:
            raise InvalidRequest("Strength only applies when you give an image.")
    else:
        if not draft.source:
            raise InvalidRequest("This needs a source image.")
        if source_size is None:
            raise InvalidRequest("The source image could not be read.")
        if draft.kind == Kind.UPSCALE:
            width = _round8(source_size[0] * 2, fam.multiple)
            height = _round8(source_size[1] * 2, fam.multiple)
        elif opts["aspect"]:
            width, height = size_for(opts["aspect"], spec.family, spec.size)
        else:
            width, height = _fit_source(source_size, spec.family, spec.size)
        default_strength = {
            Kind.UPSCALE: UPSCALE_STRENGTH,
            Kind.VARIATION: SUBTLE_STRENGTH,
        }.get(draft.kind, IMG2IMG_STRENGTH)
        strength = default_strength if draft.strength is None else draft.strength
        if not isinstance(strength, int | float) or not math.isfinite(strength):
            raise InvalidRequest("Strength must be a number.")
        if not limits.min_strength <= strength <= limits.max_strength:
            raise InvalidRequest(
                f"Strength must be between {limits.min_strength:g} and {limits.max_strength:g}."
            )
        strength = float(strength)
    _check_pixels(width, height, spec.family, limits)

    # 6. Style flags (generation/knobs.py).
    steps, style = _style_flags(flags, steps, fam, limits)

    # 6b. LoRAs: each must be in the library and of the model's family.
    loras = registry.loras.resolve(flags.get("loras", []), spec.family)
    # The files' hashes go with the job (A1111's `Lora hashes:` in its PNGs, and in its variations' PNGs).
    extra = {"lora_hashes": registry.loras.hashes(loras)} if loras else {}

    # 6c. Image references: the model needs an IP-Adapter; the weights must fit their flags.
    references = _references(draft, flags, spec)

    # 7. Words the model cannot read are dropped; the member is told (known only where the model is
    # loaded in this process: counting needs its tokenizer).
    pipe = registry.resident_pipeline(spec.name)
    tokenizer = None if pipe is None else tokenizer_for_notes(pipe)
    notes = () if tokenizer is None else cut_notes(tokenizer, prompt, negative)

    return RenderRequest(
        prompt=prompt,
        model=spec.name,
        width=width,
        height=height,
        steps=steps,
        guidance=float(guidance),
        sampler=sampler,
        seeds=_seeds(seed, count),
        kind=draft.kind,
        negative=negative,
        source=draft.source if draft.kind != Kind.TXT2IMG else None,
        strength=strength,
        notes=notes,
        **style,
        loras=loras,
        extra=extra,
        references=references,
    )


def reference_flags(prompt: str) -> list[tuple[str, str]]:
    """The prompt's --sref / --cref / --oref values as (role, what the member wrote), for the bot to fetch."""
    return list(parse_flags(prompt)[1].get("references", []))


def _references(draft: RequestDraft, flags: dict[str, Any], spec: Any) -> tuple[tuple[str, str, float], ...]:
    named = flags.get("references", [])
    weights = {WEIGHT_FLAGS[f]: float(flags[f]) for f in WEIGHT_FLAGS if f in flags}
    if not (named or draft.references or weights):
        return ()
    if getattr(spec, "ip_adapter", None) is None:
        raise InvalidRequest(NOT_CONFIGURED)
    images = list(draft.references)
    if named and [role for role, _ in named] != [role for role, _ in images]:
        # The bot fetches every named image before the request is built: reaching here is a bug, not the
        # member's fault, but a clear refusal beats a job that renders without its references.
        raise InvalidRequest("The reference images could not be read; please try again.")
    return build_references(images, weights)


def _style_flags(flags: dict[str, Any], steps: int, fam: Any, limits: Limits) -> tuple[int, dict[str, Any]]:
    """--q (the steps it multiplies), --stop, --stylize and --tile -> (steps, RenderRequest fields)."""
    style: dict[str, Any] = {}
    if "quality" in flags:
        if flags["quality"] not in QUALITIES:
            raise InvalidRequest("Flag `--q` takes .5, 1 or 2.")
        steps = max(1, round(steps * flags["quality"]))
        if steps > limits.max_steps:
            raise InvalidRequest(f"`--q {flags['quality']:g}` makes {steps} steps; this server allows at "
                                 f"most {limits.max_steps}.")
    if "stop" in flags:
        if not 10 <= flags["stop"] <= 100:
            raise InvalidRequest("Flag `--stop` takes a share of the steps from 10 to 100.")
        style["stop"] = flags["stop"]
    knobs = [f"--{name}" for name in ("stylize", "tile", "chaos") if name in flags]
    if knobs and fam.flow:
        raise InvalidRequest(f"`{knobs[0]}` works with SD 1.x, SD 2.x and SDXL models, not {fam.label}.")
    if "stylize" in flags:
        if not 0 <= flags["stylize"] <= MAX_STYLIZE:
            raise InvalidRequest(f"Flag `--stylize` takes 0 to {MAX_STYLIZE}.")
        style["stylize"] = flags["stylize"]
    if "tile" in flags:
        style["tile"] = True
    if "chaos" in flags:
        if not 0 <= flags["chaos"] <= MAX_CHAOS:
            raise InvalidRequest(f"Flag `--chaos` takes 0 to {MAX_CHAOS}.")
        style["chaos"] = flags["chaos"]
    return steps, style


def max_pixels(family: str, limits: Limits | None = None) -> int:
    """The most output pixels a model of `family` may be asked for (also the size uploads are cut to)."""
    limits = limits or Limits()
    return limits.max_pixels.get(family, FAMILY_BASE.get(family, 512) ** 2 * 4)


def _check_pixels(width: int, height: int, family: str, limits: Limits) -> None:
    cap = max_pixels(family, limits)
    if width * height > cap:
        raise InvalidRequest(f"{width}x{height} is too large for this model (at most {cap:,} pixels).")


def _check_index(parent: RenderRequest, index: int) -> int:
    if not 0 <= index < parent.count:
        raise InvalidRequest(f"There is no image {index + 1} in that job.")
    return parent.seeds[index]


def variation_of(
    parent: RenderRequest,
    index: int,
    strong: bool,
    source: str,
    seed: int | None = None,
    count: int = 1,
) -> RenderRequest:
    """img2img of image `index` of `parent` with a fresh seed (subtle 0.35 or strong 0.65)."""
    _check_index(parent, index)
    if not 1 <= count <= 4:
        raise InvalidRequest("Count must be between 1 and 4.")
    if seed is None:
        seed = secrets.randbelow(MAX_SEED + 1)
    if not 0 <= seed <= MAX_SEED:
        raise InvalidRequest(f"Seed must be a whole number from 0 to {MAX_SEED}.")
    return replace(
        parent,
        kind=Kind.VARIATION,
        seeds=_seeds(seed, count),
        source=source,
        strength=STRONG_STRENGTH if strong else SUBTLE_STRENGTH,
        extra={**parent.extra, "parent_index": index},
    )


def upscale_of(
    parent: RenderRequest, index: int, source: str, limits: Limits | None = None, family: str | None = None
) -> RenderRequest:
    """2x hires fix of image `index` of `parent`: same seed, low-strength img2img at double size.
    The bot passes the parent model's `family` (its cap); without it only the largest cap of all holds."""
    seed = _check_index(parent, index)
    width, height = _round8(parent.width * 2), _round8(parent.height * 2)
    limits = limits or Limits()
    cap = max(limits.max_pixels.values()) if family is None else max_pixels(family, limits)
    if width * height > cap:
        raise InvalidRequest("That image is already as large as this model can make it.")
    return replace(
        parent,
        kind=Kind.UPSCALE,
        width=width,
        height=height,
        seeds=(seed,),
        source=source,
        strength=UPSCALE_STRENGTH,
        extra={**parent.extra, "parent_index": index},
        # An upscale finishes the picture it was given: no early stop, no fresh per-image noise.
        stop=100,
        chaos=0,
    )
