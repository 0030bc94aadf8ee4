"""An SD 1.5-shaped random-weight model and a mapper bundle for it, for the GPU run of `python -m bench`.

The model has SD 1.5's architecture (UNet 320/640/1280/1280 with 2 layers per block and 768-d cross
attention, the 4-level VAE, a 12-layer 768-d CLIP text encoder with CLIP's 49,408-token embedding table,
SD's scheduler settings) and random weights, so timings are SD 1.5's while nothing is downloaded; the
tokenizer is the tiny chain's character-level one (tokenizing costs microseconds either way). The mapper
bundle is the tiny chain's (emotion space, attributes) with a mapper and text projection resized to 768-d
and the new model recorded as its base model. With --model, a real SD 1.5 folder is used instead of the
random one.
"""

from __future__ import annotations

import shutil
from pathlib import Path

SD15_UNET = {"sample_size": 64, "in_channels": 4, "out_channels": 4, "layers_per_block": 2,
             "block_out_channels": (320, 640, 1280, 1280),
             "down_block_types": ("CrossAttnDownBlock2D",) * 3 + ("DownBlock2D",),
             "up_block_types": ("UpBlock2D",) + ("CrossAttnUpBlock2D",) * 3,
             "cross_attention_dim": 768, "attention_head_dim": 8}
SD15_VAE = {"in_channels": 3, "out_channels": 3, "down_block_types": ("DownEncoderBlock2D",) * 4,
            "up_block_types": ("UpDecoderBlock2D",) * 4, "block_out_channels": (128, 256, 512, 512),
            "layers_per_block": 2, "latent_channels": 4, "sample_size": 512}
SD15_TEXT = {"vocab_size": 49408, "hidden_size": 768, "intermediate_size": 3072, "num_hidden_layers": 12,
             "num_attention_heads": 12, "max_position_embeddings": 77, "hidden_act": "quick_gelu",
             "projection_dim": 768}


def build_sd15_model(path: Path, tiny_models: Path) -> Path:
    """A random-weight SD 1.5-shaped diffusers folder at `path` (reused when complete)."""
    if (path / "model_index.json").is_file():
        return path
    import torch
    from diffusers import AutoencoderKL, DDPMScheduler, StableDiffusionPipeline, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTokenizer

    torch.manual_seed(0)
    tokenizer = CLIPTokenizer.from_pretrained(str(tiny_models / "tokenizer"))
    text_encoder = CLIPTextModel(CLIPTextConfig(**SD15_TEXT, bos_token_id=tokenizer.bos_token_id,
                                                eos_token_id=tokenizer.eos_token_id,
                                                pad_token_id=tokenizer.pad_token_id))
    scheduler = DDPMScheduler(beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear",
                              num_train_timesteps=1000, clip_sample=False, steps_offset=1)
    pipe = StableDiffusionPipeline(vae=AutoencoderKL(**SD15_VAE), text_encoder=text_encoder, tokenizer=tokenizer,
                                   unet=UNet2DConditionModel(**SD15_UNET), scheduler=scheduler, safety_checker=None,
                                   feature_extractor=None, image_encoder=None, requires_safety_checker=False)
    partial = path.with_name(path.name + ".partial")
    shutil.rmtree(partial, ignore_errors=True)
    pipe.save_pretrained(str(partial))
    partial.replace(path)
    return path


def sd15_mapper(tiny_mapper: Path, model: Path, out: Path) -> Path:
    """The tiny chain's mapper bundle resized to `model`'s text width, naming `model` as its base model."""
    import torch

    from emogen_cli.core.pretrained import model_fingerprint
    from emogen_cli.stage2.mapper import MapperBundle, MappingNetwork, load_mapper

    bundle = load_mapper(tiny_mapper)
    width = int(__import__("json").loads((model / "text_encoder" / "config.json").read_text())["hidden_size"])
    c = bundle.config
    torch.manual_seed(0)
    config = {**c, "out_dim": width, "base_model": str(model), "resolution": 512,
              "base_model_fingerprint": model_fingerprint(str(model))}
    config.pop("files", None)
    mapper = MappingNetwork(c["in_dim"], c["hidden_dim"], width, c["layers"])
    MapperBundle(config, mapper, bundle.space, torch.randn(width, width) / width ** 0.5, bundle.attributes).save(out)
    return out
