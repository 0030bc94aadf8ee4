"""Stable Diffusion XL: two text towers, CLIP ViT-L/14 (768-d, `text_encoder`) and OpenCLIP ViT-bigG/14
(1280-d, `text_encoder_2`, with a projection).

The UNet's conditioning, as diffusers' `StableDiffusionXLPipeline.encode_prompt` builds it:
- `prompt_embeds` [B, 77, 2048]: both towers' penultimate hidden states, concatenated (768 + 1280);
- `pooled_prompt_embeds` [B, 1280]: `text_encoder_2`'s final state at the end-of-text token through its
  text projection (emogen pools at the first end-of-text token, as SDXL was trained; see docs/backbones.md);
- `add_time_ids`: (original size, crop top-left, target size); at inference the pipeline computes them
  from the image size, in training each image's own original size and crop (diffusers' SDXL scripts).

The mapper's vector for a placeholder is 2048-d: its first 768 values are the placeholder's input
embedding in `text_encoder`, the last 1280 in `text_encoder_2` (docs/backbones.md says why one head).
The semantic vector of L_attr is `text_encoder_2`'s final state pooled at the placeholder (or end-of-text,
mapper.semantic_token) through its projection, and the attribute features come from the same tower
(docs/faithfulness.md, "SDXL").
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import torch

from emogen_cli.backbones.base import Backbone, TextTower, split_values


@dataclass
class XLEmbeds:
    """SDXL's text conditioning: `prompt_embeds` [B, 77, 2048] and `pooled_prompt_embeds` [B, 1280].

    It takes the arithmetic emogen does on SD 1.5's prompt_embeds tensor (intensity's blend, fusion
    weights, dtype casts, expanding one negative to a batch), applied to both parts."""

    prompt_embeds: torch.Tensor
    pooled_prompt_embeds: torch.Tensor

    def _map(self, fn: Callable[[torch.Tensor], torch.Tensor]) -> XLEmbeds:
        return XLEmbeds(fn(self.prompt_embeds), fn(self.pooled_prompt_embeds))

    def _zip(self, other: Any, fn: Callable[[torch.Tensor, Any], torch.Tensor]) -> XLEmbeds:
        if isinstance(other, XLEmbeds):
            return XLEmbeds(fn(self.prompt_embeds, other.prompt_embeds),
                            fn(self.pooled_prompt_embeds, other.pooled_prompt_embeds))
        return self._map(lambda t: fn(t, other))

    @property
    def dtype(self) -> torch.dtype:
        return self.prompt_embeds.dtype

    @property
    def device(self) -> torch.device:
        return self.prompt_embeds.device

    @property
    def shape(self) -> torch.Size:
        return self.prompt_embeds.shape

    def __len__(self) -> int:
        return self.prompt_embeds.shape[0]

    def __getitem__(self, rows: Any) -> XLEmbeds:
        return self._map(lambda t: t[rows])

    def float(self) -> XLEmbeds:
        return self._map(lambda t: t.float())

    def to(self, *args: Any, **kwargs: Any) -> XLEmbeds:
        return self._map(lambda t: t.to(*args, **kwargs))

    def expand(self, rows: int, *_: Any) -> XLEmbeds:
        return XLEmbeds(self.prompt_embeds.expand(rows, -1, -1), self.pooled_prompt_embeds.expand(rows, -1))

    def zeros_like(self) -> XLEmbeds:
        return self._map(torch.zeros_like)

    def __add__(self, other: Any) -> XLEmbeds:
        return self._zip(other, lambda a, b: a + b)

    def __sub__(self, other: Any) -> XLEmbeds:
        return self._zip(other, lambda a, b: a - b)

    def __mul__(self, other: Any) -> XLEmbeds:
        return self._zip(other, lambda a, b: a * b)

    __radd__ = __add__
    __rmul__ = __mul__

    @staticmethod
    def cat(items: list[XLEmbeds]) -> XLEmbeds:
        return XLEmbeds(torch.cat([i.prompt_embeds for i in items]), torch.cat([i.pooled_prompt_embeds for i in items]))

    def equal(self, other: XLEmbeds) -> bool:
        return torch.equal(self.prompt_embeds, other.prompt_embeds) and torch.equal(
            self.pooled_prompt_embeds, other.pooled_prompt_embeds)


class DualPromptEncoder:
    """SDXL's prompt encoder over two `EmotionPromptEncoder`s (one per tower, each with its own tokenizer):
    `tokenize` gives ids [B, 2, 77], `encode` gives (`XLEmbeds`, the semantic tower's pooled state)."""

    def __init__(self, towers: list[Any], semantic: int = 1) -> None:
        self.towers, self.semantic = towers, semantic
        self.tokenizer = towers[0].tokenizer
        self.text_encoder = towers[0].text_encoder
        self.placeholders = towers[0].placeholders
        self.placeholder_ids = towers[0].placeholder_ids
        self.semantic_token = towers[semantic].semantic_token

    @property
    def widths(self) -> list[int]:
        return [t.width for t in self.towers]

    @property
    def width(self) -> int:
        return sum(self.widths)

    def tokenize(self, prompts: list[str], warn: Callable[[str], None] | None = None) -> torch.Tensor:
        return torch.stack([t.tokenize(prompts, warn) for t in self.towers], 1)

    def encode(self, input_ids: torch.Tensor, values: torch.Tensor | None = None) -> tuple[XLEmbeds, torch.Tensor]:
        hidden, pooled, semantic = [], None, None
        for k, (tower, part) in enumerate(zip(self.towers, split_values(values, self.widths))):
            out = tower.outputs(input_ids[:, k], part)
            hidden.append(out.hidden_states[-2])
            last = out.last_hidden_state
            ids = input_ids[:, k].to(last.device)
            rows = torch.arange(last.shape[0], device=last.device)
            if k == self.semantic:
                semantic = last[rows, tower.pool_positions(ids)]
            if k == len(self.towers) - 1:  # text_encoder_2's projection of its end-of-text state: SDXL's pooled
                pooled = tower.text_encoder.text_projection(last[rows, tower.eos_positions(ids)])
        return XLEmbeds(torch.cat(hidden, -1), pooled), semantic


class SDXL(Backbone):
    family = "sdxl"
    title = "Stable Diffusion XL"
    class_names = ("StableDiffusionXLPipeline", "StableDiffusionXLImg2ImgPipeline", "StableDiffusionXLInpaintPipeline")
    pipeline_class = "StableDiffusionXLPipeline"
    img2img_class = "StableDiffusionXLImg2ImgPipeline"
    towers = (TextTower("tokenizer", "text_encoder", "CLIPTextModel", "clip_l"),
              TextTower("tokenizer_2", "text_encoder_2", "CLIPTextModelWithProjection", "clip_g"))
    semantic_tower = 1
    default_resolution = 1024

    def prompt_encoder(self, parts: Mapping[str, Any], placeholders: list[str], semantic_token: str = "placeholder"):
        from emogen_cli.backbones.text import EmotionPromptEncoder

        return DualPromptEncoder([EmotionPromptEncoder(parts[t.tokenizer], parts[t.text_encoder], placeholders,
                                                       semantic_token) for t in self.towers], self.semantic_tower)

    def semantic_projection(self, parts: Mapping[str, Any], clip: Any = None) -> torch.Tensor:
        """`text_encoder_2`'s own text projection (OpenCLIP bigG's, 1280 x 1280)."""
        return parts["text_encoder_2"].text_projection.weight.detach().float().cpu()

    def unet_forward(self, unet: Any, noisy: torch.Tensor, timesteps: torch.Tensor, conditioning: Any,
                     batch: Mapping[str, Any], dtype: torch.dtype) -> torch.Tensor:
        added = {"text_embeds": conditioning.pooled_prompt_embeds.to(dtype),
                 "time_ids": batch["time_ids"].to(noisy.device, dtype)}
        return unet(noisy.to(dtype), timesteps, conditioning.prompt_embeds.to(dtype), added_cond_kwargs=added).sample

    def call_kwargs(self, positive: Any, negative: Any) -> dict[str, Any]:
        return {"prompt_embeds": positive.prompt_embeds, "pooled_prompt_embeds": positive.pooled_prompt_embeds,
                "negative_prompt_embeds": negative.prompt_embeds,
                "negative_pooled_prompt_embeds": negative.pooled_prompt_embeds}

    def zeros_for_empty_negative(self, pipe: Any) -> bool:
        """SDXL's pipelines use zeros for an empty negative prompt (force_zeros_for_empty_prompt, on for SDXL base)."""
        return bool(getattr(pipe.config, "force_zeros_for_empty_prompt", True))

    def needs_time_ids(self) -> bool:
        return True


def time_ids(original: tuple[int, int], crop: tuple[int, int], target: tuple[int, int]) -> torch.Tensor:
    """SDXL's micro-conditioning of one training image: (original h, w, crop top, left, target h, w)."""
    return torch.tensor([*original, *crop, *target], dtype=torch.float32)
