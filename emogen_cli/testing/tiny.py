"""Tiny random-weight models in the real on-disk layouts, standing in for SD 1.5, CLIP and ResNet-50.

`build_tiny_bundle(dir)` writes a diffusers Stable Diffusion folder (unet, vae, text_encoder,
tokenizer, scheduler, model_index.json) plus `clip/` (a CLIPModel whose text tower is the
text encoder, as SD 1.5's is CLIP ViT-L/14's), `resnet/` (a bottleneck ResNet) and `classifier/` (a
ResNet image classifier standing in for the ImageNet / Places365 models of Sem-C). Every command
accepts these paths wherever it accepts the real hub ids, so the whole tool runs on CPU in seconds.

`build_tiny_bundle(dir, family="sdxl")` writes a tiny SDXL instead (`build_tiny_sdxl`): both text towers
(a CLIPTextModel and a CLIPTextModelWithProjection of other widths, with their two tokenizers), a UNet
with SDXL's added conditioning (text_time), an 8x VAE with force_upcast, and model_index.json naming
StableDiffusionXLPipeline, so family detection, the two-tower conditioning and every SDXL pipeline run.
"""

from __future__ import annotations

import json
from pathlib import Path

TINY_RESOLUTION = 16  # pixels; the VAE downsamples by 8 as SD's does, so latents are 2x2
TEXT_WIDTH = 32
VAE_SCALE = 8  # SD's VAE: 4 blocks, 3 of them downsampling (a 512 px photo -> 64x64 latents, as with SD 1.5)
# SD 1.5's VAE has block widths (128, 256, 512, 512) and 2 resnets per block; the tiny one keeps the structure
# (four blocks, the last two equally wide) at widths a CPU runs a 512 px photo through in about a second.
TINY_VAE_CHANNELS = (8, 16, 32, 32)
# "mid" is a larger random model for CPU benchmarks (still far below SD 1.5's 860M-parameter UNet).
SIZES = {
    # groups: the UNet's GroupNorm groups; the tiny UNet's second level runs at 1x1 latents, where 32 groups of
    # 32 channels would hold one value each (a training batch of 1 fails on that)
    "tiny": {"text_width": TEXT_WIDTH, "text_layers": 2, "unet": (32, 64), "resolution": TINY_RESOLUTION, "groups": 8},
    "mid": {"text_width": 256, "text_layers": 4, "unet": (64, 128, 256), "resolution": 64, "groups": 32},
}
# The tiny SDXL: two towers of different widths (a slicing mistake cannot pass unnoticed), an 8x VAE.
SDXL_SIZES = {
    "tiny": {"text_widths": (32, 64), "text_layers": 2, "unet": (32, 64), "resolution": 32},
    "mid": {"text_widths": (128, 256), "text_layers": 4, "unet": (64, 128, 256), "resolution": 128},
}
FAMILIES = ("sd15", "sdxl")


def sizes(family: str = "sd15") -> dict[str, dict]:
    """The sizes a family's tiny model comes in."""
    return SDXL_SIZES if family == "sdxl" else SIZES


def _bytes_to_unicode() -> list[str]:
    """The byte -> printable-character table CLIP's BPE is defined on."""
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return [chr(c) for c in cs]


def write_tiny_tokenizer(path: Path) -> None:
    """A character-level CLIP BPE vocabulary (no merges) with CLIP's special tokens."""
    chars = _bytes_to_unicode()
    tokens = chars + [c + "</w>" for c in chars] + ["<|startoftext|>", "<|endoftext|>"]
    path.mkdir(parents=True, exist_ok=True)
    (path / "vocab.json").write_text(json.dumps({t: i for i, t in enumerate(tokens)}))
    (path / "merges.txt").write_text("#version: 0.2\n")
    from transformers import CLIPTokenizer

    tokenizer = CLIPTokenizer.from_pretrained(str(path), model_max_length=77)
    tokenizer.save_pretrained(str(path))


def build_tiny_bundle(path: str | Path, seed: int = 0, size: str = "tiny", family: str = "sd15") -> Path:
    """Write every tiny model under `path` and return it (`size`: "tiny" or the benchmarks' "mid"; `family`:
    "sd15" or "sdxl")."""
    if family == "sdxl":
        return build_tiny_sdxl(path, seed, size)
    import torch
    from diffusers import AutoencoderKL, DDPMScheduler, StableDiffusionPipeline, UNet2DConditionModel
    from transformers import (
        CLIPConfig,
        CLIPModel,
        CLIPTextConfig,
        CLIPTextModel,
        CLIPTokenizer,
        CLIPVisionConfig,
    )

    from emogen_cli.core.pretrained import quiet_libraries

    quiet_libraries()
    path = Path(path)
    dims = SIZES[size]
    width, resolution, channels = dims["text_width"], dims["resolution"], dims["unet"]
    torch.manual_seed(seed)
    write_tiny_tokenizer(path / "tokenizer")
    tokenizer = CLIPTokenizer.from_pretrained(str(path / "tokenizer"))

    text_config = CLIPTextConfig(
        vocab_size=len(tokenizer), hidden_size=width, intermediate_size=2 * width, num_hidden_layers=dims["text_layers"],
        num_attention_heads=4, max_position_embeddings=77, projection_dim=width,
        bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id,
    )
    vision_config = CLIPVisionConfig(
        hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4, image_size=32,
        patch_size=8, projection_dim=width,
    )
    clip = CLIPModel(CLIPConfig(text_config=text_config.to_dict(), vision_config=vision_config.to_dict(),
                                projection_dim=width))
    clip.save_pretrained(str(path / "clip"))
    tokenizer.save_pretrained(str(path / "clip"))

    text_encoder = CLIPTextModel(text_config)
    text_encoder.load_state_dict(clip.text_model.state_dict())

    unet = UNet2DConditionModel(
        sample_size=resolution // VAE_SCALE, in_channels=4, out_channels=4, layers_per_block=1, block_out_channels=channels,
        down_block_types=("CrossAttnDownBlock2D",) * (len(channels) - 1) + ("DownBlock2D",),
        up_block_types=("UpBlock2D",) + ("CrossAttnUpBlock2D",) * (len(channels) - 1), cross_attention_dim=width,
        attention_head_dim=8, norm_num_groups=dims["groups"],
    )
    vae = AutoencoderKL(
        in_channels=3, out_channels=3, down_block_types=("DownEncoderBlock2D",) * len(TINY_VAE_CHANNELS),
        up_block_types=("UpDecoderBlock2D",) * len(TINY_VAE_CHANNELS), block_out_channels=TINY_VAE_CHANNELS,
        layers_per_block=1, latent_channels=4, norm_num_groups=8, sample_size=resolution,
    )
    scheduler = DDPMScheduler(beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear",
                              num_train_timesteps=1000, clip_sample=False,
                              steps_offset=1)
    pipe = StableDiffusionPipeline(
        vae=vae, text_encoder=text_encoder, tokenizer=tokenizer, unet=unet, scheduler=scheduler,
        safety_checker=None, feature_extractor=None, image_encoder=None, requires_safety_checker=False,
    )
    pipe.save_pretrained(str(path))
    _write_classifiers(path)
    (path / "emogen_tiny.json").write_text(json.dumps({"resolution": resolution, "seed": seed, "size": size}, indent=2))
    return path


def _write_classifiers(path: Path) -> None:
    """resnet/ (the stage-1 backbone) and classifier/ (Sem-C's stand-in), from the current torch seed."""
    from transformers import ResNetConfig, ResNetForImageClassification, ResNetModel

    resnet = ResNetModel(ResNetConfig(num_channels=3, embedding_size=8, hidden_sizes=[16, 32], depths=[1, 1],
                                      layer_type="bottleneck", hidden_act="relu"))
    resnet.save_pretrained(str(path / "resnet"))
    classifier = ResNetForImageClassification(ResNetConfig(
        num_channels=3, embedding_size=8, hidden_sizes=[16, 32], depths=[1, 1], layer_type="bottleneck",
        hidden_act="relu", num_labels=5))
    classifier.save_pretrained(str(path / "classifier"))


def build_tiny_sdxl(path: str | Path, seed: int = 0, size: str = "tiny") -> Path:
    """A tiny random-weight SDXL in the real diffusers layout (model_index.json: StableDiffusionXLPipeline), plus
    clip/ (a CLIPModel whose text tower is text_encoder_2, standing in for OpenCLIP bigG), resnet/ and classifier/."""
    import torch
    from diffusers import AutoencoderKL, EulerDiscreteScheduler, StableDiffusionXLPipeline, UNet2DConditionModel
    from transformers import (
        CLIPConfig,
        CLIPModel,
        CLIPTextConfig,
        CLIPTextModel,
        CLIPTextModelWithProjection,
        CLIPTokenizer,
        CLIPVisionConfig,
    )

    from emogen_cli.core.pretrained import quiet_libraries

    quiet_libraries()
    path = Path(path)
    dims = SDXL_SIZES[size]
    (width_l, width_g), resolution, channels = dims["text_widths"], dims["resolution"], dims["unet"]
    torch.manual_seed(seed)
    write_tiny_tokenizer(path / "tokenizer")
    tokenizer = CLIPTokenizer.from_pretrained(str(path / "tokenizer"))
    tokenizer_2 = CLIPTokenizer.from_pretrained(str(path / "tokenizer"), pad_token="!")  # SDXL's second pads with "!"
    tokenizer_2.save_pretrained(str(path / "tokenizer_2"))

    def text_config(width: int) -> CLIPTextConfig:
        return CLIPTextConfig(
            vocab_size=len(tokenizer), hidden_size=width, intermediate_size=2 * width,
            num_hidden_layers=dims["text_layers"], num_attention_heads=4, max_position_embeddings=77,
            projection_dim=width, hidden_act="gelu", bos_token_id=tokenizer.bos_token_id,
            eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id)

    text_encoder = CLIPTextModel(text_config(width_l))
    config_g = text_config(width_g)
    vision_config = CLIPVisionConfig(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
                                     image_size=32, patch_size=8, projection_dim=width_g)
    clip = CLIPModel(CLIPConfig(text_config=config_g.to_dict(), vision_config=vision_config.to_dict(),
                                projection_dim=width_g))
    clip.save_pretrained(str(path / "clip"))
    tokenizer.save_pretrained(str(path / "clip"))
    text_encoder_2 = CLIPTextModelWithProjection(config_g)
    text_encoder_2.text_model.load_state_dict(clip.text_model.state_dict())
    text_encoder_2.text_projection.load_state_dict(clip.text_projection.state_dict())

    time_dim = 8
    unet = UNet2DConditionModel(
        sample_size=resolution // 8, in_channels=4, out_channels=4, layers_per_block=1, block_out_channels=channels,
        down_block_types=("DownBlock2D",) + ("CrossAttnDownBlock2D",) * (len(channels) - 1),
        up_block_types=("CrossAttnUpBlock2D",) * (len(channels) - 1) + ("UpBlock2D",),
        cross_attention_dim=width_l + width_g, attention_head_dim=8, use_linear_projection=True, norm_num_groups=32,
        addition_embed_type="text_time", addition_time_embed_dim=time_dim,
        projection_class_embeddings_input_dim=width_g + 6 * time_dim,
    )
    vae = AutoencoderKL(
        in_channels=3, out_channels=3, down_block_types=("DownEncoderBlock2D",) * 4,
        up_block_types=("UpDecoderBlock2D",) * 4, block_out_channels=(32, 32, 32, 32), latent_channels=4,
        norm_num_groups=32, sample_size=resolution, scaling_factor=0.13025, force_upcast=True,
    )
    scheduler = EulerDiscreteScheduler(beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear",
                                       num_train_timesteps=1000, steps_offset=1, timestep_spacing="leading")
    pipe = StableDiffusionXLPipeline(
        vae=vae, text_encoder=text_encoder, text_encoder_2=text_encoder_2, tokenizer=tokenizer,
        tokenizer_2=tokenizer_2, unet=unet, scheduler=scheduler, force_zeros_for_empty_prompt=True,
        add_watermarker=False,
    )
    pipe.save_pretrained(str(path))
    _write_classifiers(path)
    (path / "emogen_tiny.json").write_text(json.dumps({"resolution": resolution, "seed": seed, "size": size,
                                                       "family": "sdxl"}, indent=2))
    return path
