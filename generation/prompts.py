"""Prompts as A1111 writes them: weights `(word:1.2)`, `(word)`, `[word]`, `BREAK`, and no 77-token cut.

CLIP reads 77 tokens (75 plus start/end markers). Like AUTOMATIC1111, a longer prompt is split into
75-token chunks, each chunk is encoded on its own, and the chunk embeddings are concatenated; weights
scale each token's embedding, then the chunk's mean is restored so the overall strength stays the same.
The pipeline then gets `prompt_embeds` (and SDXL's pooled embeddings) instead of strings.

Why not compel: compel 2.5.1 does run on transformers 5 / diffusers 0.42 with our tiny SD1.x and SDXL
pipelines, but it parses its own syntax (`(word)1.2`, `word++`), not A1111's, so an A1111 parser would
still be needed here; it weights differently (relative to the empty prompt, and down-weights by
re-encoding the prompt without the fragment: one more encoder pass per fragment), so prompts pasted
from A1111 / civitai would not render as their authors tuned them; and it has no BREAK. What we would
reuse of it is the chunk-and-encode loop below.

Midjourney's multi-prompts (`cat:: dog::2`, `::-0.5`) split a prompt into parts, each encoded on its own
(with all of the above); the part embeddings are then summed with their weights normalized to add up to 1,
so `a::1` (or `a::3`) renders exactly as `a`, and a negative part pushes the image away from its words.

Only CLIP-conditioned pipelines (SD1.x, SD2, SDXL and its refiner) are encoded here; for any other
pipeline `encode` returns None and the caller passes the strings as before.
"""

from __future__ import annotations

import copy
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

# At most this many 75-token chunks per prompt (225 tokens): each chunk lengthens every cross-attention
# call of every step, so the cost is bounded; words past it are dropped and the member is told.
MAX_CHUNKS = 3
ROUND = 1.1  # (word) multiplies by this, [word] divides by it (A1111's values)
# Weights are clamped so a typo such as (word:1e9) or deep nesting cannot overflow into NaN (a black image).
MAX_WEIGHT = 10.0

Piece = tuple[str, float]  # text and its weight

_TOKEN_RE = re.compile(
    r"""
    \\[\\()\[\]]                            # an escaped bracket or backslash: literal
    | \(
    | \[
    | :\s*([+-]?(?:\d+\.?\d*|\.\d+))\s*\)   # ':1.3)' closes a round bracket with an explicit weight
    | \)
    | \]
    | [^\\()\[\]:]+
    | [\\:]                                 # a lone backslash or colon: literal
    """,
    re.X,
)
_BREAK_RE = re.compile(r"\s*\bBREAK\b\s*")
_OPENERS = {"(": "round", "[": "square"}


def parse(text: str) -> list[list[Piece]]:
    """A1111 attention syntax -> segments (split at BREAK) of (text, weight) pieces.

    `(a)` is a x1.1, `((a))` x1.21, `(a:1.3)` x1.3, `[a]` /1.1, nesting multiplies, `\\(` is a literal
    bracket. Unlike A1111 an unclosed `(` does not weight the rest of the prompt: a bracket without its
    partner is plain text, never an error. Neighbouring pieces of equal weight are merged.
    """
    tokens = [(m.group(0), m.group(1)) for m in _TOKEN_RE.finditer(text)]
    literal = _unmatched(tokens)
    pieces: list[list[Any]] = []  # [text, weight, is_break]
    stacks: dict[str, list[int]] = {"round": [], "square": []}

    def multiply(start: int, factor: float) -> None:
        for piece in pieces[start:]:
            piece[1] *= factor

    for i, (tok, weight) in enumerate(tokens):
        if i in literal:
            pieces.append([tok, 1.0, False])
        elif tok.startswith("\\") and len(tok) == 2:
            pieces.append([tok[1], 1.0, False])
        elif tok in _OPENERS:
            stacks[_OPENERS[tok]].append(len(pieces))
        elif weight is not None:
            multiply(stacks["round"].pop(), float(weight))
        elif tok == ")":
            multiply(stacks["round"].pop(), ROUND)
        elif tok == "]":
            multiply(stacks["square"].pop(), 1 / ROUND)
        else:
            for j, part in enumerate(_BREAK_RE.split(tok)):
                if j:
                    pieces.append(["", 1.0, True])
                pieces.append([part, 1.0, False])
    return _segments(pieces)


def _segments(pieces: list[list[Any]]) -> list[list[Piece]]:
    """[text, weight, is_break] pieces -> segments split at BREAK, weights clamped, neighbours of equal
    weight merged."""
    segments: list[list[Piece]] = [[]]
    for piece_text, piece_weight, is_break in pieces:
        if is_break:
            segments.append([])
            continue
        if not piece_text:
            continue
        piece_weight = min(MAX_WEIGHT, max(-MAX_WEIGHT, piece_weight))
        segment = segments[-1]
        if segment and segment[-1][1] == piece_weight:
            segment[-1] = (segment[-1][0] + piece_text, piece_weight)
        else:
            segment.append((piece_text, piece_weight))
    return segments


def _unmatched(tokens: list[tuple[str, str | None]]) -> set[int]:
    """Indexes of brackets without a partner (kept as text). Round and square brackets pair up
    separately, as in A1111; `:1.2)` is a closing round bracket."""
    open_at: dict[str, list[int]] = {"round": [], "square": []}
    lonely: set[int] = set()
    for i, (tok, weight) in enumerate(tokens):
        if tok in _OPENERS:
            open_at[_OPENERS[tok]].append(i)
        elif tok == ")" or weight is not None:
            if open_at["round"]:
                open_at["round"].pop()
            else:
                lonely.add(i)
        elif tok == "]":
            if open_at["square"]:
                open_at["square"].pop()
            else:
                lonely.add(i)
    return lonely | set(open_at["round"]) | set(open_at["square"])


def plain_text(segments: list[list[Piece]]) -> str:
    """The words of a parsed prompt without its syntax (BREAK becomes a space)."""
    return " ".join("".join(t for t, _ in segment) for segment in segments)


# ---------------------------------------------------------------------------------------------
# Multi-prompts (Midjourney's `::`)
# ---------------------------------------------------------------------------------------------

# Each part is one more text-encoder pass over every chunk: bounded like the chunks.
MAX_PARTS = 8
# `::` then an optional weight. A1111's `(word:1.2)` has one colon, so the two syntaxes never collide.
_MULTI_RE = re.compile(r"::\s*([+-]?(?:\d+\.?\d*|\.\d+))?")


def split_multi(text: str) -> list[Piece]:
    """`cat:: dog::2` -> [("cat", 1.0), ("dog", 2.0)]: the parts of a multi-prompt and their raw weights.

    A text without `::` is one part of weight 1, kept as it is (so it encodes exactly as before). Text
    after the last `::` is a part of weight 1; parts without words are dropped (with their weight);
    weights are clamped to +-MAX_WEIGHT. Never raises: validate_multi says what a member did wrong.
    """
    if "::" not in text:
        return [(text, 1.0)]
    parts: list[Piece] = []
    start = 0
    for match in _MULTI_RE.finditer(text):
        weight = 1.0 if match.group(1) is None else float(match.group(1))
        parts.append((text[start : match.start()].strip(), min(MAX_WEIGHT, max(-MAX_WEIGHT, weight))))
        start = match.end()
    parts.append((text[start:].strip(), 1.0))
    return [(part, weight) for part, weight in parts if part]


def multi_error(text: str) -> str | None:
    """Why `text` is not a multi-prompt that can be drawn (a short message for the member), or None."""
    if "::" not in text:
        return None
    parts = split_multi(text)
    if not parts:
        return "A multi-prompt needs words between its `::`, like `cat:: dog::2`."
    if len(parts) > MAX_PARTS:
        return f"A multi-prompt has at most {MAX_PARTS} parts (this one has {len(parts)})."
    if sum(weight for _, weight in parts) <= 0:
        return ("The weights of a multi-prompt must add up to more than zero: `cat:: dog::-0.5` works, "
                "`dog::-0.5` alone does not.")
    return None


def _normalized(text: str) -> list[Piece]:
    """The parts of `text` with weights that add up to 1 (what the encoder mixes). A prompt that never
    went through validation (a total of zero or less, no words) is read as its words, unweighted."""
    parts = split_multi(text)[:MAX_PARTS]
    total = sum(weight for _, weight in parts)
    if not parts or total <= 0:
        return [(" ".join(part for part, _ in parts), 1.0)]
    return [(part, weight / total) for part, weight in parts]


def multi_plain(text: str) -> str:
    """The words of the parts that pull towards the image, for pipelines that take strings."""
    return " ".join(part for part, weight in _normalized(text) if weight > 0)


# ---------------------------------------------------------------------------------------------
# Tokens and chunks
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Chunked:
    """One prompt as one tokenizer sees it: full-length chunks of ids and per-token weights."""

    chunks: list[tuple[list[int], list[float]]]
    # Characters of plain_text() that were used; None when nothing was cut.
    cut_at: int | None = None


def chunk(tokenizer: Any, text: str, max_chunks: int = MAX_CHUNKS) -> Chunked:
    """Tokenize `text` into 77-token chunks laid out as the pipeline lays out a short prompt
    (start, tokens, end, padding), so a prompt that fits one chunk encodes exactly as today."""
    segments = parse(text)
    body = tokenizer.model_max_length - 2
    chunks: list[tuple[list[int], list[float]]] = []
    ids: list[int] = []
    weights: list[float] = []

    def close() -> None:
        pad = body - len(ids)
        chunks.append(
            (
                [tokenizer.bos_token_id, *ids, tokenizer.eos_token_id] + [tokenizer.pad_token_id] * pad,
                [1.0, *weights, 1.0] + [1.0] * pad,
            )
        )
        ids.clear()
        weights.clear()

    offset = 0  # where the current piece starts in plain_text(segments)
    for s, segment in enumerate(segments):
        if s:
            if ids:  # BREAK: start a new chunk
                close()
            offset += 1
        for piece, weight in segment:
            for token, start in _tokens(tokenizer, piece):
                if len(ids) == body:
                    close()
                if len(chunks) == max_chunks:
                    return Chunked(chunks, cut_at=offset + start)
                ids.append(token)
                weights.append(weight)
            offset += len(piece)
    if ids or not chunks:
        close()
    return Chunked(chunks)


def _tokens(tokenizer: Any, text: str) -> list[tuple[int, int]]:
    """(token id, start character) of each token of `text`, without start/end markers."""
    try:
        # verbose=False: a long prompt is expected here, not worth transformers' "too long" warning.
        encoded = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True, verbose=False)
        starts = [start for start, _ in encoded["offset_mapping"]]
        return list(zip(encoded["input_ids"], starts, strict=True))
    except NotImplementedError:  # a slow (pure Python) tokenizer has no offsets: cut at the piece start
        return [(t, 0) for t in tokenizer(text, add_special_tokens=False, verbose=False)["input_ids"]]


def cut_notes(tokenizer: Any, prompt: str, negative: str = "") -> tuple[str, ...]:
    """Short notes for the member about words the model will not read (empty when all fit)."""
    notes = []
    # Each part of a multi-prompt is chunked on its own.
    labelled = [("prompt", part) for part, _ in _normalized(prompt)] if prompt else []
    for label, text in [*labelled, ("negative prompt", negative)]:
        if not text:
            continue
        cut_at = chunk(tokenizer, text).cut_at
        if cut_at is not None:
            plain = plain_text(parse(text))
            # A word cut in the middle was not used either.
            inside = 0 < cut_at < len(plain)
            mid_word = inside and not plain[cut_at].isspace() and not plain[cut_at - 1].isspace()
            words = len(plain[:cut_at].split()) - mid_word
            notes.append(f"the {label} was cut after {words} words (the model reads at most "
                         f"{MAX_CHUNKS * (tokenizer.model_max_length - 2)} tokens)")
    return tuple(notes)


# ---------------------------------------------------------------------------------------------
# Pipelines
# ---------------------------------------------------------------------------------------------


def _encoders(pipe: Any) -> list[tuple[Any, Any]] | None:
    """(tokenizer, CLIP text encoder) pairs in the pipeline's order, or None for a pipeline this module
    does not encode (anything with a T5 encoder, or not CLIP at all)."""
    from transformers import CLIPTextModel, CLIPTextModelWithProjection

    if getattr(pipe, "text_encoder_3", None) is not None or not hasattr(pipe, "unet"):
        return None
    pairs = [
        (getattr(pipe, tok, None), getattr(pipe, enc, None))
        for tok, enc in (("tokenizer", "text_encoder"), ("tokenizer_2", "text_encoder_2"))
    ]
    pairs = [(t, e) for t, e in pairs if t is not None and e is not None]
    if not pairs or not all(isinstance(e, CLIPTextModel | CLIPTextModelWithProjection) for _, e in pairs):
        return None
    return pairs


def tokenizer_for_notes(pipe: Any) -> Any | None:
    """A private copy of the pipeline's first tokenizer for counting on another thread (a fast tokenizer
    is not safe to use from two threads at once), or None if the pipeline's prompts are not chunked."""
    pairs = _encoders(pipe)
    if pairs is None:
        return None
    tokenizer = pairs[0][0]
    cached = _NOTE_TOKENIZERS.get(id(tokenizer))
    if cached is None or cached[0] is not tokenizer:
        cached = (tokenizer, copy.deepcopy(tokenizer))
        _NOTE_TOKENIZERS[id(tokenizer)] = cached
    return cached[1]


_NOTE_TOKENIZERS: dict[int, tuple[Any, Any]] = {}


def chunk_count(pipe: Any, prompt: str, negative: str) -> int:
    """How many chunks a prompt and its negative take (the longer of the two): renders batched in one
    call must agree on it, since padding a prompt with empty chunks would change its pixels."""
    pairs = _encoders(pipe) or []
    texts = [part for part, _ in _normalized(prompt)] + [negative]
    return max((len(chunk(t, text).chunks) for t, _ in pairs for text in texts), default=1)


def call_arguments(pipe: Any, prompts: Sequence[str], negatives: Sequence[str], clip_skip: int | None = None
                   ) -> dict[str, Any]:
    """The prompt arguments of one pipeline call: embeddings where this module encodes the pipeline's
    prompts, else the strings (the pipeline encodes them itself)."""
    embeds = encode(pipe, prompts, negatives, clip_skip)
    if embeds is not None:
        return embeds
    strings: dict[str, Any] = {
        "prompt": [multi_plain(p) for p in prompts],
        "negative_prompt": list(negatives) if any(negatives) else None,
    }
    if clip_skip is not None:
        strings["clip_skip"] = clip_skip
    return strings


def encode(pipe: Any, prompts: Sequence[str], negatives: Sequence[str], clip_skip: int | None = None
           ) -> dict[str, Any] | None:
    """The pipeline call's prompt arguments (prompt_embeds, negative_prompt_embeds and, for SDXL, the
    pooled ones) for one row per image, or None when the pipeline's prompts are not encoded here.

    Every row is padded with empty chunks to the longest row. An SDXL pipeline configured with
    force_zeros_for_empty_prompt gets zeros as the negative when no row has one, as its own encode does.
    """
    import torch

    pairs = _encoders(pipe)
    if pairs is None:
        return None
    with torch.inference_mode():
        return _encode(pipe, pairs, prompts, negatives, clip_skip)


def _encode(pipe: Any, pairs: list[tuple[Any, Any]], prompts: Sequence[str], negatives: Sequence[str],
            clip_skip: int | None) -> dict[str, Any]:
    import torch

    xl = hasattr(pipe, "text_encoder_2")
    # Each row is one image's parts (one for a plain prompt); every part is encoded as a row of its own,
    # then a row's parts are mixed by their normalized weights (_mix).
    rows = {"prompt": [_normalized(p) for p in prompts], "negative": [[(n, 1.0)] for n in negatives]}
    parts = {name: [part for row in per_row for part in row] for name, per_row in rows.items()}
    chunked = {name: [[chunk(t, text) for t, _ in pairs] for text, _ in texts]
               for name, texts in parts.items()}
    n = max(len(c.chunks) for per_text in chunked.values() for per_encoder in per_text for c in per_encoder)
    device = getattr(pipe, "_execution_device", None)
    zero_negative = xl and not any(negatives) and getattr(pipe.config, "force_zeros_for_empty_prompt", False)

    out: dict[str, Any] = {}
    for name, per_text in chunked.items():
        if name == "negative" and zero_negative:
            out["negative_prompt_embeds"] = torch.zeros_like(out["prompt_embeds"])
            out["negative_pooled_prompt_embeds"] = torch.zeros_like(out["pooled_prompt_embeds"])
            continue
        hidden: list[Any] = []
        pooled = None
        for e, (tokenizer, encoder) in enumerate(pairs):
            empty = chunk(tokenizer, "").chunks[0]
            padded = [c for row in per_text for c in row[e].chunks + [empty] * (n - len(row[e].chunks))]
            # One forward over every chunk of every row, as the pipeline encodes its whole batch at once.
            ids = torch.tensor([c_ids for c_ids, _ in padded], device=device or encoder.device)
            output = encoder(ids, output_hidden_states=xl or clip_skip is not None)
            if xl:
                states = output.hidden_states[-(clip_skip + 2) if clip_skip else -2]
                if output[0].ndim == 2:  # the projection encoder: SDXL's pooled text embedding
                    pooled = output[0].view(len(per_text), n, -1)[:, 0]  # from the first chunk, as A1111
            elif clip_skip:
                states = encoder.text_model.final_layer_norm(output.hidden_states[-(clip_skip + 1)])
            else:
                states = output[0]
            # Each encoder weighs its own tokens, as A1111 does for SDXL's two embedders.
            weights = torch.tensor([w for _, w in padded], dtype=states.dtype, device=states.device)
            hidden.append(_apply_weights(states, weights))
        z = torch.cat(hidden, dim=-1)  # [rows * n, 77, width of all encoders]
        embeds = z.reshape(len(per_text), n * z.shape[1], z.shape[2])
        key = "prompt_embeds" if name == "prompt" else "negative_prompt_embeds"
        out[key] = _mix(embeds, rows[name])
        if xl:
            out["pooled_prompt_embeds" if name == "prompt" else "negative_pooled_prompt_embeds"] = (
                _mix(pooled, rows[name]))
    return out


def _mix(per_part: Any, rows: list[list[Piece]]) -> Any:
    """One embedding per row from the embeddings of its parts (in order): the weighted sum. A row of one
    part has weight 1 and is returned as it was encoded, bit for bit."""
    import torch

    if all(len(row) == 1 for row in rows):
        return per_part
    mixed = []
    at = 0
    for row in rows:
        mixed.append(sum(per_part[at + i] * weight for i, (_, weight) in enumerate(row)))
        at += len(row)
    return torch.stack(mixed)


def _apply_weights(z: Any, weights: Any) -> Any:
    """A1111's emphasis: scale each token's embedding by its weight, then restore the chunk's mean.
    Chunks without weights are left untouched (bit for bit what the pipeline itself would produce)."""
    for i in range(z.shape[0]):
        w = weights[i]
        if bool((w == 1.0).all()):
            continue
        original_mean = z[i].mean()
        scaled = z[i] * w[:, None]
        new_mean = scaled.mean()
        z[i] = scaled * (original_mean / new_mean) if new_mean != 0 else scaled
    return z
