"""/shorten's analysis on the tiny real pipelines: token counts, each word's influence measured by the
real text encoder, and a shortened prompt that fits one window and keeps the prompt's flags."""

from __future__ import annotations

from typing import Any

import pytest
import torch

from generation.errors import InvalidRequest
from generation.shorten import analyse


def _pooled(pipe: Any, text: str) -> torch.Tensor:
    ids = pipe.tokenizer(text, padding="max_length", max_length=pipe.tokenizer.model_max_length,
                         truncation=True, return_tensors="pt").input_ids
    with torch.inference_mode():
        out = pipe.text_encoder(ids)
    return getattr(out, "text_embeds", None) if hasattr(out, "text_embeds") else out.pooler_output


@pytest.mark.parametrize("model", ["tiny", "tiny-xl"])
def test_influence_is_the_encoders_distance_and_the_short_prompt_fits(tiny_registry: Any, model: str) -> None:
    pipe = tiny_registry.pipeline(model)
    short = analyse(pipe, "a red kite over a grey sea --ar 3:2")
    counted = pipe.tokenizer("a red kite over a grey sea", add_special_tokens=False)["input_ids"]
    assert short.tokens == len(counted) and short.window == 75
    assert [w for w, _ in short.influence] == "a red kite over a grey sea".split()
    # The measure is the encoder's: dropping "kite" moves the pooled embedding by what analyse reports.
    full, without = _pooled(pipe, "a red kite over a grey sea"), _pooled(pipe, "a red over a grey sea")
    expected = 1 - torch.nn.functional.cosine_similarity(full, without).item()
    assert dict(short.influence)["kite"] == pytest.approx(expected, abs=1e-4)
    assert short.shortened.endswith("--ar 3:2")

    words = ("quiet harbour with small boats under the pale morning sky and gulls over old stone piers near "
             "green hills beside").split()
    long = analyse(pipe, " ".join(words))
    assert long.tokens > long.window
    kept = long.shortened.split()
    assert len(pipe.tokenizer(long.shortened, add_special_tokens=False)["input_ids"]) <= long.window
    dropped = [w for w, _ in long.influence if w not in kept]
    assert dropped and all(w in words for w in kept)
    # The dropped words are the least influential ones.
    least = max(d for w, d in long.influence if w in dropped)
    assert all(d >= least for w, d in long.influence if w in kept and w not in dropped)


def test_an_empty_prompt_is_refused(tiny_registry: Any) -> None:
    with pytest.raises(InvalidRequest):
        analyse(tiny_registry.pipeline("tiny"), "   --ar 1:1")
