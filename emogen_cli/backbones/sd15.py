"""Stable Diffusion 1.x: one CLIP ViT-L/14 text tower (768-d), `prompt_embeds` = its last hidden state.

This is the backbone EmoGen itself was built on; every line here is what emogen did before the seam,
so SD 1.5 images are unchanged (tests/test_pinned_images.py).
"""

from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType
from typing import Any

import torch

from emogen_cli.backbones.base import Backbone, TextTower


class SD15(Backbone):
    family = "sd15"
    title = "Stable Diffusion 1.x"
    class_names = ("StableDiffusionPipeline", "StableDiffusionImg2ImgPipeline", "StableDiffusionInpaintPipeline")
    pipeline_class = "StableDiffusionPipeline"
    img2img_class = "StableDiffusionImg2ImgPipeline"
    towers = (TextTower("tokenizer", "text_encoder", "CLIPTextModel", "emb_params"),)
    semantic_tower = 0
    default_resolution = 512
    pipeline_kwargs: Mapping[str, Any] = MappingProxyType({"safety_checker": None, "requires_safety_checker": False})

    def prompt_encoder(self, parts: Mapping[str, Any], placeholders: list[str], semantic_token: str = "placeholder"):
        from emogen_cli.backbones.text import EmotionPromptEncoder

        return EmotionPromptEncoder(parts["tokenizer"], parts["text_encoder"], placeholders, semantic_token)

    def semantic_projection(self, parts: Mapping[str, Any], clip: Any = None) -> torch.Tensor:
        """CLIP's text projection (SD 1.5's text tower is CLIP ViT-L/14's, the paper's semantic space)."""
        return clip.text_projection.weight.detach().float().cpu()

    def unet_forward(self, unet: Any, noisy: torch.Tensor, timesteps: torch.Tensor, conditioning: Any,
                     batch: Mapping[str, Any], dtype: torch.dtype) -> torch.Tensor:
        return unet(noisy.to(dtype), timesteps, conditioning.to(dtype)).sample

    def call_kwargs(self, positive: Any, negative: Any) -> dict[str, Any]:
        return {"prompt_embeds": positive, "negative_prompt_embeds": negative}
