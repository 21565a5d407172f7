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
RECIPE_VERSION = "6"
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


def _text_config(tokenizer: Any, projection_dim: int | None = None, hidden_size: int = 32,
                 hidden_act: str = "quick_gelu") -> Any:
    from transformers import CLIPTextConfig

    kwargs: dict[str, Any] = {}
    if projection_dim is not None:
        kwargs["projection_dim"] = projection_dim
    return CLIPTextConfig(
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        hidden_size=hidden_size,
        intermediate_size=hidden_size + 5,
        layer_norm_eps=1e-05,
        num_attention_heads=4,
        num_hidden_layers=2,
        vocab_size=600,
        max_position_embeddings=77,
        hidden_act=hidden_act,
        **kwargs,
    )


def _vae(latent_channels: int = 4, scaling: float = 0.18215, shift: float | None = None) -> Any:
    from diffusers import AutoencoderKL

    # Four blocks like real SD (scale factor 8); with two, a 512² decode takes minutes. The family's
    # own latent width and scaling / shift, so the pipelines do the same arithmetic as on real weights.
    flow = shift is not None
    return AutoencoderKL(
        block_out_channels=(8, 8, 16, 16),
        in_channels=3,
        out_channels=3,
        down_block_types=("DownEncoderBlock2D",) * 4,
        up_block_types=("UpDecoderBlock2D",) * 4,
        latent_channels=latent_channels,
        norm_num_groups=8,
        layers_per_block=1,
        sample_size=64,
        scaling_factor=scaling,
        shift_factor=shift,
        # SD3 / Flux VAEs have no quant convs.
        use_quant_conv=not flow,
        use_post_quant_conv=not flow,
    )


def _scheduler(prediction_type: str = "epsilon") -> Any:
    from diffusers import EulerDiscreteScheduler

    return EulerDiscreteScheduler(
        beta_start=0.00085,
        beta_end=0.012,
        beta_schedule="scaled_linear",
        num_train_timesteps=1000,
        steps_offset=1,
        timestep_spacing="leading",
        prediction_type=prediction_type,
    )


def _t5_tokenizer(max_length: int) -> Any:
    from transformers import T5TokenizerFast  # type: ignore[attr-defined]  # lazily exported

    # A Unigram model held in memory (no sentencepiece file): T5's special ids first (<pad> 0, </s> 1,
    # <unk> 2), then every printable ASCII character alone and word-initial ("▁a").
    chars = [chr(c) for c in range(33, 127)]
    pieces = [("<pad>", 0.0), ("</s>", 0.0), ("<unk>", 0.0), ("▁", -2.0)]
    pieces += [(c, -3.0) for c in chars] + [("▁" + c, -2.5) for c in chars]
    return T5TokenizerFast(vocab=pieces, extra_ids=0, model_max_length=max_length)


def _t5_encoder() -> Any:
    from transformers import T5Config, T5EncoderModel

    return T5EncoderModel(T5Config(vocab_size=200, d_model=32, d_ff=37, d_kv=8, num_layers=1, num_heads=4,
                                   relative_attention_num_buckets=8, relative_attention_max_distance=16))


def _flow_scheduler(shift: float, dynamic: bool) -> Any:
    from diffusers import FlowMatchEulerDiscreteScheduler

    return FlowMatchEulerDiscreteScheduler(
        num_train_timesteps=1000, shift=shift, use_dynamic_shifting=dynamic,
        base_image_seq_len=256, max_image_seq_len=4096, base_shift=0.5, max_shift=1.15,
    )


def _sd_unet(cross_attention_dim: int, linear_projection: bool = False, in_channels: int = 4) -> Any:
    from diffusers import UNet2DConditionModel

    return UNet2DConditionModel(
        block_out_channels=(16, 32, 32, 32),
        layers_per_block=1,
        sample_size=64,
        in_channels=in_channels,
        out_channels=4,
        # SD's layout (four levels, no attention in the lowest one) so single-file keys map, but
        # attention only at 1/4 latent size: full-size attention makes a 512² step cost ~1 s.
        down_block_types=("DownBlock2D", "DownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"),
        up_block_types=("UpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D", "UpBlock2D"),
        cross_attention_dim=cross_attention_dim,
        attention_head_dim=8,
        norm_num_groups=16,
        use_linear_projection=linear_projection,
    )


# The tiny UNet models also get a tiny IP-Adapter (generation/references.py) in this subfolder.
IP_ADAPTER_FAMILIES = ("sd15", "sd2", "sdxl")
IP_ADAPTER_FOLDER = "ip_adapter"

# The SDXL refiner is no family of its own (SDXL's latents and limits) but a second-stage img2img model.
REFINER = "sdxl-refiner"


def build_tiny_pipeline(xl: bool = False, family: str | None = None) -> Any:
    """A fresh tiny pipeline of `family` (`xl`: SDXL; or REFINER) with deterministic random weights."""
    import torch
    from diffusers import StableDiffusionPipeline

    from generation.families import family_of

    torch.manual_seed(_SEED)
    tokenizer = _tokenizer()
    if family == REFINER:
        return _tiny_sdxl_refiner(tokenizer)
    fam = family_of(family or ("sdxl" if xl else "sd15"))
    if fam.name == "sdxl":
        return _tiny_sdxl(tokenizer)
    if fam.name == "sd3":
        return _tiny_sd3(tokenizer)
    if fam.flow:
        return _tiny_flux(tokenizer, dev=fam.guidance == "distilled")
    from transformers import CLIPTextModel

    sd2 = fam.name == "sd2"
    # SD 2.x: OpenCLIP-H (plain GELU, where OpenAI's CLIP-L uses quick GELU), linear projections in the
    # UNet's transformers, and v-prediction as the 768² model.
    unet = _sd_unet(32, linear_projection=sd2)
    text_encoder = CLIPTextModel(_text_config(tokenizer, hidden_act="gelu" if sd2 else "quick_gelu"))
    return StableDiffusionPipeline(
        vae=_vae(),
        text_encoder=text_encoder,
        tokenizer=tokenizer,
        unet=unet,
        scheduler=_scheduler("v_prediction" if sd2 else "epsilon"),
        safety_checker=None,
        feature_extractor=None,
        requires_safety_checker=False,
    )


def _sdxl_unet(size_numbers: int, cross_attention_dim: int) -> Any:
    from diffusers import UNet2DConditionModel

    # SDXL shape: pooled projection (32) and `size_numbers` size-conditioning numbers (text_time).
    return UNet2DConditionModel(
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
        projection_class_embeddings_input_dim=8 * size_numbers + 32,
        cross_attention_dim=cross_attention_dim,
        norm_num_groups=16,
    )


def _tiny_sdxl(tokenizer: Any) -> Any:
    from diffusers import StableDiffusionXLPipeline
    from transformers import CLIPTextModel, CLIPTextModelWithProjection

    # Two text encoders, their hidden states side by side (32 + 48) as SDXL's 768 + 1280.
    unet = _sdxl_unet(size_numbers=6, cross_attention_dim=80)
    text_encoder = CLIPTextModel(_text_config(tokenizer))
    # A different width from the first encoder, as in real SDXL (CLIP-L 768, OpenCLIP bigG 1280):
    # the single-file loader tells the two apart by it.
    text_encoder_2 = CLIPTextModelWithProjection(_text_config(tokenizer, projection_dim=32, hidden_size=48))
    return StableDiffusionXLPipeline(
        vae=_vae(scaling=0.13025),
        text_encoder=text_encoder,
        text_encoder_2=text_encoder_2,
        tokenizer=tokenizer,
        tokenizer_2=_tokenizer(),
        unet=unet,
        scheduler=_scheduler(),
        force_zeros_for_empty_prompt=True,
    )


def _tiny_sdxl_refiner(tokenizer: Any) -> Any:
    from diffusers import StableDiffusionXLImg2ImgPipeline
    from transformers import CLIPTextModelWithProjection

    # As the real refiner: only the second (OpenCLIP) text encoder, and an aesthetic score in place of
    # the target size among the size conditioning (5 numbers, not 6).
    unet = _sdxl_unet(size_numbers=5, cross_attention_dim=48)
    text_encoder_2 = CLIPTextModelWithProjection(_text_config(tokenizer, projection_dim=32, hidden_size=48))
    return StableDiffusionXLImg2ImgPipeline(
        vae=_vae(scaling=0.13025),
        text_encoder=None,
        text_encoder_2=text_encoder_2,
        tokenizer=None,
        tokenizer_2=tokenizer,
        unet=unet,
        scheduler=_scheduler(),
        requires_aesthetics_score=True,
        force_zeros_for_empty_prompt=False,
    )


def _tiny_sd3(tokenizer: Any) -> Any:
    from diffusers import SD3Transformer2DModel, StableDiffusion3Pipeline
    from transformers import CLIPTextModelWithProjection

    from generation.families import SD3

    # MMDiT over 16-channel latents in 2x2 patches; CLIP-L and CLIP-G pooled side by side (32 + 32), T5
    # for the token sequence (its width is the joint attention width).
    transformer = SD3Transformer2DModel(
        sample_size=64, patch_size=2, in_channels=16, out_channels=16, num_layers=1, attention_head_dim=8,
        num_attention_heads=4, caption_projection_dim=32, joint_attention_dim=32, pooled_projection_dim=64,
        # Patches up to a 2048² image (256 latents / 2).
        pos_embed_max_size=128,
    )
    clip = _text_config(tokenizer, projection_dim=32, hidden_act="gelu")
    return StableDiffusion3Pipeline(
        transformer=transformer,
        scheduler=_flow_scheduler(shift=3.0, dynamic=False),
        vae=_vae(SD3.latent_channels, SD3.vae_scaling, SD3.vae_shift),
        text_encoder=CLIPTextModelWithProjection(clip),
        tokenizer=tokenizer,
        text_encoder_2=CLIPTextModelWithProjection(clip),
        tokenizer_2=_tokenizer(),
        text_encoder_3=_t5_encoder(),
        tokenizer_3=_t5_tokenizer(SD3.max_prompt_tokens),
    )


def _tiny_flux(tokenizer: Any, dev: bool) -> Any:
    from diffusers import FluxPipeline, FluxTransformer2DModel
    from transformers import CLIPTextModel

    from generation.families import FLUX_DEV, FLUX_SCHNELL

    fam = FLUX_DEV if dev else FLUX_SCHNELL
    transformer = FluxTransformer2DModel(
        patch_size=1,
        in_channels=4 * fam.latent_channels,  # 2x2-packed latents
        num_layers=1,
        num_single_layers=1,
        attention_head_dim=16,
        num_attention_heads=2,
        joint_attention_dim=32,  # T5's width
        pooled_projection_dim=32,  # CLIP's pooled output
        axes_dims_rope=(4, 4, 8),
        # dev embeds the guidance number; schnell has no such input.
        guidance_embeds=dev,
    )
    return FluxPipeline(
        transformer=transformer,
        # dev shifts its schedule by image size; schnell runs its few steps unshifted.
        scheduler=_flow_scheduler(shift=3.0 if dev else 1.0, dynamic=dev),
        vae=_vae(fam.latent_channels, fam.vae_scaling, fam.vae_shift),
        text_encoder=CLIPTextModel(_text_config(tokenizer)),
        tokenizer=tokenizer,
        text_encoder_2=_t5_encoder(),
        tokenizer_2=_t5_tokenizer(fam.max_prompt_tokens),
    )


def write_tiny_inpaint_model(dir: Path) -> Path:
    """A tiny SD1.x inpaint checkpoint: the tiny model's parts around a 9-channel UNet (noisy latents, the
    mask and the masked image's latents), saved as StableDiffusionInpaintPipeline like a real one."""
    import torch
    from diffusers import StableDiffusionInpaintPipeline

    torch.manual_seed(_SEED)
    base = build_tiny_pipeline(family="sd15")
    pipe = StableDiffusionInpaintPipeline(**{**base.components, "unet": _sd_unet(32, in_channels=9)},
                                          requires_safety_checker=False)
    dir = Path(dir)
    dir.mkdir(parents=True, exist_ok=True)
    pipe.save_pretrained(dir, safe_serialization=True)  # type: ignore[attr-defined]  # diffusers' stubs
    return dir


def write_tiny_ip_adapter(dir: Path, unet: Any, seed: int = 99, embed_dim: int = 16) -> Path:
    """A tiny IP-Adapter for `unet` in the layout `load_ip_adapter` reads, made offline: `image_encoder/`
    (a random CLIPVisionModelWithProjection) and `ip-adapter.safetensors` (`image_proj.proj` / `.norm`, and
    `ip_adapter.<n>.to_k_ip` / `to_v_ip` for every cross-attention layer, numbered as diffusers counts
    attention processors: 1, 3, 5, ...). Returns the weights file."""
    import torch
    from safetensors.torch import save_file
    from transformers import CLIPVisionConfig, CLIPVisionModelWithProjection

    torch.manual_seed(seed)
    dir = Path(dir)
    dir.mkdir(parents=True, exist_ok=True)
    encoder = CLIPVisionModelWithProjection(CLIPVisionConfig(
        hidden_size=32, intermediate_size=37, num_hidden_layers=2, num_attention_heads=4, image_size=32,
        patch_size=8, projection_dim=embed_dim))
    encoder.save_pretrained(dir / "image_encoder", safe_serialization=True)
    cross = int(unet.config.cross_attention_dim)
    blocks = list(unet.config.block_out_channels)
    state: dict[str, Any] = {
        "image_proj.proj.weight": torch.randn(cross * 4, embed_dim) * 0.5,
        "image_proj.proj.bias": torch.zeros(cross * 4),
        "image_proj.norm.weight": torch.ones(cross),
        "image_proj.norm.bias": torch.zeros(cross),
    }
    key_id = 1
    for name in unet.attn_processors:
        if name.endswith("attn1.processor"):
            continue
        if name.startswith("mid_block"):
            hidden = blocks[-1]
        elif name.startswith("up_blocks"):
            hidden = list(reversed(blocks))[int(name[len("up_blocks.")])]
        else:
            hidden = blocks[int(name[len("down_blocks.")])]
        # Strong enough that a reference visibly changes the tiny model's pixels.
        state[f"ip_adapter.{key_id}.to_k_ip.weight"] = torch.randn(hidden, cross)
        state[f"ip_adapter.{key_id}.to_v_ip.weight"] = torch.randn(hidden, cross)
        key_id += 2
    path = dir / "ip-adapter.safetensors"
    save_file(state, str(path))
    return path


def write_tiny_model(dir: Path, xl: bool = False, family: str | None = None) -> Path:
    """Build the tiny model of `family` (`xl`: SDXL, default SD1.x) and save it as a diffusers folder."""
    from generation.families import family_of

    name = family if family == REFINER else family_of(family or ("sdxl" if xl else "sd15")).name
    dir = Path(dir)
    dir.mkdir(parents=True, exist_ok=True)
    pipe = build_tiny_pipeline(family=name)
    pipe.save_pretrained(dir, safe_serialization=True)
    if name in IP_ADAPTER_FAMILIES:
        # Beside the model, as an operator would keep one: `<model>?ip_adapter=<dir>/ip_adapter`.
        write_tiny_ip_adapter(dir / IP_ADAPTER_FOLDER, pipe.unet)
    (dir / _MARKER).write_text(f"{RECIPE_VERSION}\n{name}\n")
    return dir


def tiny_model_dir(data_dir: Path, xl: bool = False, family: str | None = None) -> Path:
    name = family or ("sdxl" if xl else "sd15")
    folder = {"sd15": "tiny", "sdxl": "tiny-xl"}.get(name, f"tiny-{name}")
    return Path(data_dir) / "models" / folder


def ensure_tiny_model(data_dir: Path, xl: bool = False, family: str | None = None) -> Path:
    """The tiny model's folder under the data dir, written once (rebuilt if the recipe changed)."""
    name = family or ("sdxl" if xl else "sd15")
    target = tiny_model_dir(data_dir, family=name)
    marker = target / _MARKER
    if marker.exists() and marker.read_text().splitlines()[:1] == [RECIPE_VERSION]:
        return target
    log.info("writing the tiny %s model to %s", name, target)
    # Write beside, then swap in, so a crash mid-write never leaves a half model that looks complete.
    tmp = target.with_name(target.name + ".tmp")
    if tmp.exists():
        import shutil

        shutil.rmtree(tmp)
    write_tiny_model(tmp, family=name)
    if target.exists():
        import shutil

        shutil.rmtree(target)
    tmp.rename(target)
    return target


def write_tiny_safety_checker(dir: Path, threshold: float = 0.0) -> Path:
    """A tiny diffusers StableDiffusionSafetyChecker (random CLIP vision tower) with its
    CLIPImageProcessor, saved as a folder that `ATELIER_SAFETY_CHECKER` can point at.

    Every concept's threshold is `threshold`: an image is flagged when its cosine similarity to a
    concept exceeds it, so `-inf` flags every image and `inf` none (what tests need from random weights)."""
    import torch
    from diffusers.pipelines.stable_diffusion.safety_checker import StableDiffusionSafetyChecker
    from transformers import CLIPConfig, CLIPImageProcessor

    torch.manual_seed(_SEED)
    config = CLIPConfig(
        text_config={"hidden_size": 32, "num_hidden_layers": 1, "num_attention_heads": 4,
                     "intermediate_size": 37, "vocab_size": 100, "bos_token_id": 0, "eos_token_id": 1,
                     "pad_token_id": 1},
        vision_config={"hidden_size": 32, "image_size": 32, "patch_size": 4, "num_hidden_layers": 2,
                       "num_attention_heads": 4, "intermediate_size": 37},
        projection_dim=32,
    )
    module = StableDiffusionSafetyChecker(config).eval()
    with torch.no_grad():
        module.concept_embeds_weights.fill_(threshold)
        module.special_care_embeds_weights.fill_(threshold)
    dir = Path(dir)
    module.save_pretrained(dir, safe_serialization=True)
    CLIPImageProcessor(size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32}).save_pretrained(dir)
    return dir


# ---------------------------------------------------------------------------------------------
# Original (CompVis / A1111) single-file layout, so the `.safetensors` loading path can be tested
# offline with a checkpoint written from the tiny model: SD1.x, and SDXL with its second text encoder
# in OpenCLIP's layout.
# ---------------------------------------------------------------------------------------------

_RESNET_RENAMES = (
    ("norm1", "in_layers.0"),
    ("conv1", "in_layers.2"),
    ("norm2", "out_layers.0"),
    ("conv2", "out_layers.3"),
    ("time_emb_proj", "emb_layers.1"),
    ("conv_shortcut", "skip_connection"),
)
_UNET_FIXED = {
    "time_embedding.linear_1": "time_embed.0",
    "time_embedding.linear_2": "time_embed.2",
    "conv_in": "input_blocks.0.0",
    "conv_norm_out": "out.0",
    "conv_out": "out.2",
    # SDXL's pooled-text + size conditioning.
    "add_embedding.linear_1": "label_emb.0.0",
    "add_embedding.linear_2": "label_emb.0.2",
}


def _unet_to_ldm(state: dict[str, Any], config: Any) -> dict[str, Any]:
    per_block = config["layers_per_block"] + 1
    up_has_attn = ["CrossAttn" in t for t in config["up_block_types"]]
    out: dict[str, Any] = {}
    for key, value in state.items():
        parts = key.split(".")
        new: str | None = None
        head = ".".join(parts[:2]) if parts[0] in ("time_embedding", "add_embedding") else parts[0]
        if head in _UNET_FIXED:
            new = _UNET_FIXED[head] + "." + parts[-1]
        elif parts[0] in ("down_blocks", "up_blocks"):
            b, kind, j, rest = int(parts[1]), parts[2], int(parts[3]), ".".join(parts[4:])
            if parts[0] == "down_blocks":
                i = 1 + b * per_block + j
                if kind == "resnets":
                    new = f"input_blocks.{i}.0.{_rename_resnet(rest)}"
                elif kind == "attentions":
                    new = f"input_blocks.{i}.1.{rest}"
                else:  # downsamplers.0.conv.*
                    new = f"input_blocks.{1 + b * per_block + per_block - 1}.0.op.{rest.split('.', 1)[1]}"
            else:
                i = b * per_block + j
                if kind == "resnets":
                    new = f"output_blocks.{i}.0.{_rename_resnet(rest)}"
                elif kind == "attentions":
                    new = f"output_blocks.{i}.1.{rest}"
                else:  # upsamplers.0.conv.*: after the attention when the block has one
                    last = b * per_block + per_block - 1
                    new = f"output_blocks.{last}.{2 if up_has_attn[b] else 1}.{rest}"
        elif parts[0] == "mid_block":
            kind, j, rest = parts[1], int(parts[2]), ".".join(parts[3:])
            new = (
                f"middle_block.{2 * j}.{_rename_resnet(rest)}"
                if kind == "resnets"
                else f"middle_block.1.{rest}"
            )
        if new is None:
            raise ValueError(f"no original-layout name for UNet key {key}")
        out["model.diffusion_model." + new] = value
    return out


def _rename_resnet(rest: str) -> str:
    head, _, tail = rest.partition(".")
    for old, new in _RESNET_RENAMES:
        if head == old:
            return f"{new}.{tail}"
    return rest


def _vae_to_ldm(state: dict[str, Any], config: Any) -> dict[str, Any]:
    n_up = len(config["up_block_types"])
    out: dict[str, Any] = {}
    attn_names = {"group_norm": "norm", "to_q": "q", "to_k": "k", "to_v": "v", "to_out.0": "proj_out"}
    for key, value in state.items():
        side, _, rest = key.partition(".")
        parts = rest.split(".")
        if side in ("quant_conv", "post_quant_conv"):
            new = key
        elif parts[0] == "conv_norm_out":
            new = f"{side}.norm_out.{parts[1]}"
        elif parts[0] in ("conv_in", "conv_out"):
            new = key
        elif parts[0] in ("down_blocks", "up_blocks"):
            b = int(parts[1])
            level = b if parts[0] == "down_blocks" else n_up - 1 - b
            name = "down" if parts[0] == "down_blocks" else "up"
            if parts[2] == "resnets":
                tail = ".".join(parts[4:]).replace("conv_shortcut", "nin_shortcut")
                new = f"{side}.{name}.{level}.block.{parts[3]}.{tail}"
            else:
                sampler = "downsample" if name == "down" else "upsample"
                new = f"{side}.{name}.{level}.{sampler}.conv.{parts[-1]}"
        elif parts[0] == "mid_block":
            if parts[1] == "resnets":
                tail = ".".join(parts[3:]).replace("conv_shortcut", "nin_shortcut")
                new = f"{side}.mid.block_{int(parts[2]) + 1}.{tail}"
            else:
                sub = ".".join(parts[3:-1])
                new = f"{side}.mid.attn_1.{attn_names[sub]}.{parts[-1]}"
                if value.ndim == 2:  # original layout uses 1x1 convolutions here
                    value = value[:, :, None, None]
        else:
            raise ValueError(f"no original-layout name for VAE key {key}")
        out["first_stage_model." + new] = value
    return out


def _text_model_key(key: str) -> str:
    # transformers >= 5.6 names CLIPTextModel's weights without the `text_model.` level the loader expects.
    return key if key.startswith(("text_model.", "text_projection")) else f"text_model.{key}"


def _open_clip(state: dict[str, Any]) -> dict[str, Any]:
    """A CLIP text model's weights in OpenCLIP's layout (SD2's encoder, SDXL's second one)."""
    import torch

    state = {_text_model_key(k): v for k, v in state.items()}
    out: dict[str, Any] = {
        "token_embedding.weight": state.pop("text_model.embeddings.token_embedding.weight"),
        "positional_embedding": state.pop("text_model.embeddings.position_embedding.weight"),
        "ln_final.weight": state.pop("text_model.final_layer_norm.weight"),
        "ln_final.bias": state.pop("text_model.final_layer_norm.bias"),
    }
    if "text_projection.weight" in state:  # SDXL's pooled projection; SD2 uses the hidden states only
        out["text_projection"] = state.pop("text_projection.weight").T
    state.pop("text_model.embeddings.position_ids", None)
    layers = sorted({int(k.split(".")[3]) for k in state if k.startswith("text_model.encoder.layers.")})
    for i in layers:
        src, dst = f"text_model.encoder.layers.{i}.", f"transformer.resblocks.{i}."
        for kind in ("weight", "bias"):
            out[f"{dst}attn.in_proj_{kind}"] = torch.cat(
                [state.pop(f"{src}self_attn.{p}_proj.{kind}") for p in "qkv"])
            out[f"{dst}attn.out_proj.{kind}"] = state.pop(f"{src}self_attn.out_proj.{kind}")
            out[f"{dst}ln_1.{kind}"] = state.pop(f"{src}layer_norm1.{kind}")
            out[f"{dst}ln_2.{kind}"] = state.pop(f"{src}layer_norm2.{kind}")
            out[f"{dst}mlp.c_fc.{kind}"] = state.pop(f"{src}mlp.fc1.{kind}")
            out[f"{dst}mlp.c_proj.{kind}"] = state.pop(f"{src}mlp.fc2.{kind}")
    if state:
        raise ValueError(f"no OpenCLIP name for text encoder keys {sorted(state)[:3]}")
    return out


def write_single_file(model_dir: Path, path: Path) -> Path:
    """Write a diffusers folder (SD1.x, SD2.x or SDXL) as one original-layout `.safetensors` checkpoint."""
    from diffusers import DiffusionPipeline
    from safetensors.torch import save_file

    pipe = DiffusionPipeline.from_pretrained(model_dir, local_files_only=True)
    state: dict[str, Any] = {}
    state.update(_unet_to_ldm(pipe.unet.state_dict(), pipe.unet.config))
    state.update(_vae_to_ldm(pipe.vae.state_dict(), pipe.vae.config))
    xl = getattr(pipe, "text_encoder_2", None) is not None
    if not xl and pipe.text_encoder.config.hidden_act == "gelu":
        # SD2's OpenCLIP-H is stored in OpenCLIP's own layout (the loader tells SD2 apart by it).
        for key, value in _open_clip(pipe.text_encoder.state_dict()).items():
            state[f"cond_stage_model.model.{key}"] = value
    else:
        first = "conditioner.embedders.0.transformer." if xl else "cond_stage_model.transformer."
        for key, value in pipe.text_encoder.state_dict().items():
            state[first + _text_model_key(key)] = value
    if xl:
        for key, value in _open_clip(pipe.text_encoder_2.state_dict()).items():
            state[f"conditioner.embedders.1.model.{key}"] = value
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    save_file({k: v.contiguous() for k, v in state.items()}, str(path))
    return path


# --- the tiny captioner (/describe) --------------------------------------------------------------------

CAPTIONER_RECIPE = "1"
# Real words, so the tiny captioner's random output reads like (nonsense) prompts, plus WordPiece's
# letter pieces so any text tokenizes.
_CAPTION_WORDS = (
    "a an the of in on with and at by painting photo portrait city sky sea forest cat dog woman man tree "
    "house light night dusk mountain river street red blue green gold dark bright old small large misty "
    "glowing soft"
).split()


def write_tiny_captioner(dir: Path) -> Path:
    """A tiny BLIP captioner (BlipForConditionalGeneration with fixed random weights, a WordPiece
    tokenizer built in memory, a 32-pixel image processor) saved as a transformers folder: the same
    AutoProcessor / AutoModelForImageTextToText loading path as Salesforce/blip-image-captioning-*."""
    import torch
    from transformers import BertTokenizer, BlipConfig, BlipForConditionalGeneration, BlipProcessor
    from transformers.models.blip.image_processing_pil_blip import BlipImageProcessorPil

    letters = [chr(c) for c in range(ord("a"), ord("z") + 1)]
    special = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "[DEC]"]  # [DEC] starts BLIP's captions
    tokens = [*special, *_CAPTION_WORDS, *(c for c in letters if c not in _CAPTION_WORDS),
              *("##" + c for c in letters)]
    vocab = {tok: i for i, tok in enumerate(tokens)}
    tokenizer = BertTokenizer(vocab=vocab, bos_token="[DEC]", model_max_length=40)
    torch.manual_seed(_SEED)
    config = BlipConfig(
        vision_config={"hidden_size": 32, "intermediate_size": 37, "num_hidden_layers": 2,
                       "num_attention_heads": 4, "image_size": 32, "patch_size": 8, "projection_dim": 32},
        text_config={"vocab_size": len(vocab), "hidden_size": 32, "intermediate_size": 37,
                     "num_hidden_layers": 2, "num_attention_heads": 4, "max_position_embeddings": 64,
                     "bos_token_id": vocab["[DEC]"], "pad_token_id": vocab["[PAD]"],
                     "sep_token_id": vocab["[SEP]"], "eos_token_id": vocab["[SEP]"],
                     "encoder_hidden_size": 32},
        projection_dim=32,
    )
    model = BlipForConditionalGeneration(config).eval()
    processor = BlipProcessor(image_processor=BlipImageProcessorPil(size={"height": 32, "width": 32}),
                              tokenizer=tokenizer)
    dir = Path(dir)
    dir.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(dir)
    processor.save_pretrained(dir)
    (dir / _MARKER).write_text(f"{CAPTIONER_RECIPE}\ncaptioner\n")
    return dir


def write_tiny_florence(dir: Path) -> Path:
    """A tiny Florence-2 captioner (Florence2ForConditionalGeneration: a two-stage DaViT and a one-layer
    BART, random weights; a byte-level BART tokenizer with no merges and the `<image>` token), saved as a
    transformers folder: the loading path and task prompts of florence-community/Florence-2-*."""
    import torch
    from transformers import (
        BartTokenizer,
        Florence2Config,
        Florence2ForConditionalGeneration,
        Florence2Processor,
    )
    from transformers.models.clip.image_processing_pil_clip import CLIPImageProcessorPil

    tokens = ["<s>", "<pad>", "</s>", "<unk>", *_bytes_to_unicode().values(), "<mask>", "<image>"]
    vocab = {tok: i for i, tok in enumerate(tokens)}
    tokenizer = BartTokenizer(vocab=vocab, merges=[], extra_special_tokens={"image_token": "<image>"},
                              model_max_length=256)
    # 32 px in, 4x4 patches after the two stages, plus the pooled token: 17 image tokens.
    image_processor = CLIPImageProcessorPil(size={"height": 32, "width": 32}, do_center_crop=False,
                                            crop_size={"height": 32, "width": 32}, image_seq_length=17)
    torch.manual_seed(_SEED)
    config = Florence2Config(
        vision_config={"depths": (1, 1), "patch_size": (7, 3), "patch_stride": (4, 2),
                       "patch_padding": (3, 1), "patch_prenorm": (False, True), "embed_dim": (16, 32),
                       "num_heads": (2, 4), "num_groups": (2, 4), "window_size": 2, "projection_dim": 32},
        text_config={"model_type": "bart", "vocab_size": len(vocab), "d_model": 32, "encoder_layers": 1,
                     "decoder_layers": 1, "encoder_attention_heads": 4, "decoder_attention_heads": 4,
                     "encoder_ffn_dim": 37, "decoder_ffn_dim": 37, "max_position_embeddings": 128,
                     "bos_token_id": 0, "pad_token_id": 1, "eos_token_id": 2, "decoder_start_token_id": 2,
                     "forced_eos_token_id": 2},
        image_token_id=vocab["<image>"],
    )
    model = Florence2ForConditionalGeneration(config).eval()
    dir = Path(dir)
    dir.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(dir)
    Florence2Processor(image_processor=image_processor, tokenizer=tokenizer).save_pretrained(dir)
    (dir / _MARKER).write_text(f"{CAPTIONER_RECIPE}\nflorence2\n")
    return dir


# The tiny captioners by source name (ATELIER_CAPTION_MODEL), and their writers.
TINY_CAPTIONERS = {"tiny": write_tiny_captioner, "tiny-florence": write_tiny_florence}


def ensure_tiny_captioner(data_dir: Path, name: str = "tiny") -> Path:
    """A tiny captioner's folder under the data dir (`tiny`: BLIP, `tiny-florence`: Florence-2), written
    once (beside, then swapped in)."""
    import shutil

    target = Path(data_dir) / "models" / ("tiny-captioner" if name == "tiny" else f"{name}-captioner")
    marker = target / _MARKER
    if marker.exists() and marker.read_text().splitlines()[:1] == [CAPTIONER_RECIPE]:
        return target
    log.info("writing the tiny captioner %s to %s", name, target)
    tmp = target.with_name(target.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    TINY_CAPTIONERS[name](tmp)
    shutil.rmtree(target, ignore_errors=True)
    tmp.rename(target)
    return target
