"""The built-in offline model: a tiny Stable Diffusion pipeline with fixed random weights.

It runs the same diffusers code paths as a real checkpoint (save_pretrained, then
from_pretrained(..., local_files_only=True)) without a GPU or a download. Its images are noise.
The UNet uses SD's own block order (attention in the high-res blocks, none in the lowest) so an
original-layout single-file checkpoint written from it maps back key for key.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

# Bump when the recipe changes so stale copies under the data dir are rebuilt.
RECIPE_VERSION = "3"
_SEED = 1234
_MARKER = "atelier-tiny.txt"


def _bytes_to_unicode() -> dict[int, str]:
    # GPT-2/CLIP byte-level alphabet: every byte maps to a printable character.
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1))
    bs += list(range(ord("®"), ord("ÿ") + 1))
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return dict(zip(bs, [chr(c) for c in cs], strict=True))


def _tokenizer() -> Any:
    from transformers import CLIPTokenizer

    # Byte-level vocab with no merges: every character is its own token, plus a word-final form.
    chars = list(_bytes_to_unicode().values())
    tokens = ["<|startoftext|>", "<|endoftext|>", *chars, *(c + "</w>" for c in chars)]
    vocab = {tok: i for i, tok in enumerate(tokens)}
    return CLIPTokenizer(vocab=vocab, merges=[], model_max_length=77)


def _text_config(tokenizer: Any, projection_dim: int | None = None) -> Any:
    from transformers import CLIPTextConfig

    kwargs: dict[str, Any] = {}
    if projection_dim is not None:
        kwargs["projection_dim"] = projection_dim
    return CLIPTextConfig(
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        hidden_size=32,
        intermediate_size=37,
        layer_norm_eps=1e-05,
        num_attention_heads=4,
        num_hidden_layers=2,
        vocab_size=600,
        max_position_embeddings=77,
        **kwargs,
    )


def _vae() -> Any:
    from diffusers import AutoencoderKL

    # Four blocks like real SD (scale factor 8); with two, a 512² decode takes minutes.
    return AutoencoderKL(
        block_out_channels=(8, 8, 16, 16),
        in_channels=3,
        out_channels=3,
        down_block_types=("DownEncoderBlock2D",) * 4,
        up_block_types=("UpDecoderBlock2D",) * 4,
        latent_channels=4,
        norm_num_groups=8,
        layers_per_block=1,
        sample_size=64,
    )


def _scheduler() -> Any:
    from diffusers import EulerDiscreteScheduler

    return EulerDiscreteScheduler(
        beta_start=0.00085,
        beta_end=0.012,
        beta_schedule="scaled_linear",
        num_train_timesteps=1000,
        steps_offset=1,
        timestep_spacing="leading",
    )


def build_tiny_pipeline(xl: bool = False) -> Any:
    """A fresh tiny pipeline with deterministic random weights (not yet saved)."""
    import torch
    from diffusers import StableDiffusionPipeline, StableDiffusionXLPipeline, UNet2DConditionModel
    from transformers import CLIPTextModel, CLIPTextModelWithProjection

    torch.manual_seed(_SEED)
    tokenizer = _tokenizer()
    if not xl:
        unet = UNet2DConditionModel(
            block_out_channels=(16, 32, 32, 32),
            layers_per_block=1,
            sample_size=64,
            in_channels=4,
            out_channels=4,
            # SD's layout (four levels, no attention in the lowest one) so single-file keys map, but
            # attention only at 1/4 latent size: full-size attention makes a 512² step cost ~1 s.
            down_block_types=("DownBlock2D", "DownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"),
            up_block_types=("UpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D", "UpBlock2D"),
            cross_attention_dim=32,
            attention_head_dim=8,
            norm_num_groups=16,
        )
        text_encoder = CLIPTextModel(_text_config(tokenizer))
        return StableDiffusionPipeline(
            vae=_vae(),
            text_encoder=text_encoder,
            tokenizer=tokenizer,
            unet=unet,
            scheduler=_scheduler(),
            safety_checker=None,
            feature_extractor=None,
            requires_safety_checker=False,
        )
    # SDXL shape: two text encoders, pooled projection and size conditioning (text_time).
    unet = UNet2DConditionModel(
        block_out_channels=(16, 32, 32),
        layers_per_block=1,
        sample_size=128,
        in_channels=4,
        out_channels=4,
        # SDXL's three levels; attention only at the lowest so a 1024² step stays cheap.
        down_block_types=("DownBlock2D", "DownBlock2D", "CrossAttnDownBlock2D"),
        up_block_types=("CrossAttnUpBlock2D", "UpBlock2D", "UpBlock2D"),
        attention_head_dim=(2, 4, 4),
        use_linear_projection=True,
        addition_embed_type="text_time",
        addition_time_embed_dim=8,
        transformer_layers_per_block=(1, 1, 1),
        projection_class_embeddings_input_dim=8 * 6 + 32,
        cross_attention_dim=64,
        norm_num_groups=16,
    )
    text_encoder = CLIPTextModel(_text_config(tokenizer))
    text_encoder_2 = CLIPTextModelWithProjection(_text_config(tokenizer, projection_dim=32))
    return StableDiffusionXLPipeline(
        vae=_vae(),
        text_encoder=text_encoder,
        text_encoder_2=text_encoder_2,
        tokenizer=tokenizer,
        tokenizer_2=_tokenizer(),
        unet=unet,
        scheduler=_scheduler(),
        force_zeros_for_empty_prompt=True,
    )


def write_tiny_model(dir: Path, xl: bool = False) -> Path:
    """Build the tiny model and save it as a diffusers folder at `dir`."""
    dir = Path(dir)
    dir.mkdir(parents=True, exist_ok=True)
    pipe = build_tiny_pipeline(xl=xl)
    pipe.save_pretrained(dir, safe_serialization=True)
    (dir / _MARKER).write_text(f"{RECIPE_VERSION}\n{'xl' if xl else 'sd15'}\n")
    return dir


def tiny_model_dir(data_dir: Path, xl: bool = False) -> Path:
    return Path(data_dir) / "models" / ("tiny-xl" if xl else "tiny")


def ensure_tiny_model(data_dir: Path, xl: bool = False) -> Path:
    """The tiny model's folder under the data dir, written once (rebuilt if the recipe changed)."""
    target = tiny_model_dir(data_dir, xl)
    marker = target / _MARKER
    if marker.exists() and marker.read_text().splitlines()[:1] == [RECIPE_VERSION]:
        return target
    log.info("writing the tiny %s model to %s", "SDXL" if xl else "SD1.x", target)
    # Write beside, then swap in, so a crash mid-write never leaves a half model that looks complete.
    tmp = target.with_name(target.name + ".tmp")
    if tmp.exists():
        import shutil

        shutil.rmtree(tmp)
    write_tiny_model(tmp, xl=xl)
    if target.exists():
        import shutil

        shutil.rmtree(target)
    tmp.rename(target)
    return target
