"""/shorten: how much of a prompt the model reads, and which words change it least.

A word's influence is how far the prompt's text embedding moves when that word alone is dropped: the
cosine distance between CLIP's pooled embeddings (the end-of-text token's state, which sums up what a
window read), averaged over the prompt's 75-token windows as Atelier encodes them (prompts.chunk). The
shortened prompt drops the least influential words until it fits one window; a prompt that fits already
loses the words under a fifth of the average influence (the ones that barely move it)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from generation.errors import InvalidRequest
from generation.prompts import MAX_CHUNKS, _encoders, chunk, tokenizer_for_notes
from generation.validate import flag_matches

MAX_WORDS = 60  # each is one more row through the text encoder
FAINT = 0.2


@dataclass(frozen=True)
class Shortening:
    tokens: int  # of the prompt's text (flags aside)
    window: int  # what one chunk reads
    readable: int  # what the model reads at most (the windows Atelier encodes)
    influence: list[tuple[str, float]]  # (word, distance when dropped), in the prompt's order
    shortened: str  # with the prompt's flags, unchanged, at the end


def supported(pipe: Any) -> bool:
    return _encoders(pipe) is not None


def analyse(pipe: Any, prompt: str) -> Shortening:
    """Run the pipeline's first text encoder over the prompt and its one-word-shorter variants. Blocking
    (torch): call it from a worker thread."""
    import torch

    pairs = _encoders(pipe)
    tokenizer = tokenizer_for_notes(pipe)  # a private copy: fast tokenizers are not thread safe
    if pairs is None or tokenizer is None:
        raise InvalidRequest("/shorten works with SD 1.x, SD 2.x and SDXL models.")
    encoder = pairs[0][1]
    flags = flag_matches(prompt)
    text = prompt[: flags[0].start()] if flags else prompt
    tail = prompt[flags[0].start():].strip() if flags else ""
    words = text.split()
    if not words:
        raise InvalidRequest("Write a prompt to shorten.")
    analysed = words[:MAX_WORDS]
    rest = words[MAX_WORDS:]
    variants = [" ".join(words)]
    variants += [" ".join(analysed[:i] + analysed[i + 1:] + rest) for i in range(len(analysed))]

    rows: list[list[int]] = []
    owner: list[int] = []
    for v, variant in enumerate(variants):
        for ids, _ in chunk(tokenizer, variant).chunks:
            rows.append(ids)
            owner.append(v)
    with torch.inference_mode():
        out = encoder(torch.tensor(rows, device=encoder.device))
        pooled = getattr(out, "text_embeds", None)
        pooled = out.pooler_output if pooled is None else pooled
        pooled = pooled.float()
        index = torch.tensor(owner)
        sums = torch.zeros(len(variants), pooled.shape[-1]).index_add_(0, index, pooled.cpu())
        means = sums / torch.bincount(index, minlength=len(variants)).unsqueeze(1)
        distance = 1 - torch.nn.functional.cosine_similarity(means[:1], means[1:], dim=-1)
    influence = [(word, max(0.0, float(d))) for word, d in zip(analysed, distance.tolist(), strict=True)]

    window = tokenizer.model_max_length - 2
    tokens = len(tokenizer(" ".join(words), add_special_tokens=False, verbose=False)["input_ids"])
    kept = list(range(len(analysed)))
    order = sorted(kept, key=lambda i: influence[i][1])

    def length(keep: list[int]) -> int:
        shown = " ".join([*(analysed[i] for i in keep), *rest])
        return len(tokenizer(shown, add_special_tokens=False, verbose=False)["input_ids"])

    if tokens > window:
        for i in order:
            if length(kept) <= window or len(kept) == 1:
                break
            kept.remove(i)
    else:
        average = sum(d for _, d in influence) / len(influence)
        kept = [i for i in kept if influence[i][1] >= FAINT * average] or kept
    shortened = " ".join([*(analysed[i] for i in kept), *rest, tail]).strip()
    return Shortening(tokens=tokens, window=window, readable=window * MAX_CHUNKS, influence=influence,
                      shortened=shortened)
