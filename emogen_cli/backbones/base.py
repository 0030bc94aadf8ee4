"""The backbone seam: what emogen needs to know about a family of diffusion models (SD 1.5, SDXL, ...).

A `Backbone` says, for one family:
- its text towers (`TextTower`: tokenizer and text encoder names in the diffusers folder, the encoder's
  transformers class, and the key its embedding has in the A1111/ComfyUI textual-inversion file);
- how a prompt holding placeholder tokens becomes the UNet's conditioning (`prompt_encoder`: tokenize,
  then encode to the family's conditioning value and the pooled semantic state);
- which text tower gives the semantic vector and the attribute features of L_attr (`semantic_tower`,
  `semantic_projection`);
- how the UNet is called in training (`unet_forward`: SDXL's added conditioning) and how a diffusers
  pipeline is called with the conditioning (`call_kwargs`);
- which diffusers pipeline classes sample and edit (`pipeline_class`, `img2img_class`);
- the textual-inversion export layout (`export_tensors`).

The mapping network writes one vector per placeholder whose width is the sum of the towers' widths
(SD 1.5: 768; SDXL: 768 + 1280); the prompt encoder hands each tower its slice. docs/backbones.md
says how to add a family. Nothing here imports diffusers or transformers at module level.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any

import torch

from emogen_cli.core.errors import EmogenError


@dataclass(frozen=True)
class TextTower:
    """One text encoder of a family, as its diffusers folder names it."""

    tokenizer: str  # subfolder / pipeline attribute of the tokenizer ("tokenizer", "tokenizer_2")
    text_encoder: str  # subfolder / pipeline attribute of the encoder ("text_encoder", "text_encoder_2")
    encoder_class: str  # transformers class ("CLIPTextModel", "CLIPTextModelWithProjection")
    export_key: str  # its tensor's key in the A1111/ComfyUI embedding file ("emb_params"; SDXL: "clip_l", "clip_g")


class Backbone:
    """One model family. Subclasses set the class attributes and override what differs."""

    family: str = ""  # the name model.family takes and bundles record ("sd15", "sdxl")
    title: str = ""  # for people ("Stable Diffusion 1.x")
    class_names: tuple[str, ...] = ()  # model_index.json `_class_name` values of this family
    pipeline_class: str = ""  # diffusers text-to-image class
    img2img_class: str = ""  # diffusers image-to-image class (emogen edit)
    towers: tuple[TextTower, ...] = ()
    semantic_tower: int = 0  # which tower's projection the semantic vector (L_attr, L_emo, decompose) lives in
    default_resolution: int = 512  # image side when model.resolution is not set
    vae_scale: int = 8  # pixels per latent (the sizes an image may take are multiples of it)
    pipeline_kwargs: Mapping[str, Any] = MappingProxyType({})  # extra from_pretrained arguments of pipeline_class

    # ------------------------------------------------------------------------------ loading
    def load_text(self, pretrained: str, revision: str | None = None) -> dict[str, Any]:
        """Every tower's tokenizer and text encoder, keyed by their folder names."""
        import transformers

        from emogen_cli.core.pretrained import load, quiet_libraries

        quiet_libraries()
        parts: dict[str, Any] = {}
        for tower in self.towers:
            parts[tower.tokenizer] = load(transformers.CLIPTokenizer, pretrained, tower.tokenizer, revision=revision)
            parts[tower.text_encoder] = load(getattr(transformers, tower.encoder_class), pretrained,
                                             tower.text_encoder, revision=revision)
        return parts

    def load_parts(self, pretrained: str, revision: str | None = None, *, vae: bool = True,
                   unet: bool = True) -> dict[str, Any]:
        """The text towers, the training noise scheduler, (the UNet), (the VAE) of a model of this family."""
        from diffusers import AutoencoderKL, DDPMScheduler, UNet2DConditionModel

        from emogen_cli.core.pretrained import load

        parts = self.load_text(pretrained, revision)
        parts["noise_scheduler"] = load(DDPMScheduler, pretrained, "scheduler", revision=revision)
        if unet:
            parts["unet"] = load(UNet2DConditionModel, pretrained, "unet", revision=revision)
        if vae:
            parts["vae"] = load(AutoencoderKL, pretrained, "vae", revision=revision)
        return parts

    def text_encoders(self, parts: Mapping[str, Any]) -> list[Any]:
        return [parts[t.text_encoder] for t in self.towers]

    def text_widths(self, parts: Mapping[str, Any]) -> dict[str, int]:
        """{text encoder name: hidden width}: what a bundle records and a mapper writes (their sum)."""
        return {t.text_encoder: int(parts[t.text_encoder].config.hidden_size) for t in self.towers}

    # ------------------------------------------------------------------------------ conditioning
    def prompt_encoder(self, parts: Mapping[str, Any], placeholders: list[str], semantic_token: str = "placeholder"):
        """An encoder with `tokenize(texts, warn)` -> ids and `encode(ids, values)` -> (conditioning, pooled
        semantic state [B, D_semantic]); `values` [B, K, sum of widths] are the placeholders' vectors."""
        raise NotImplementedError

    def semantic_projection(self, parts: Mapping[str, Any], clip: Any = None) -> torch.Tensor:
        """[P, D_semantic]: the projection from the semantic tower's pooled state to the semantic space."""
        raise NotImplementedError

    def unet_forward(self, unet: Any, noisy: torch.Tensor, timesteps: torch.Tensor, conditioning: Any,
                     batch: Mapping[str, Any], dtype: torch.dtype) -> torch.Tensor:
        """The UNet's prediction for training (L_ldm) under `conditioning`."""
        raise NotImplementedError

    def call_kwargs(self, positive: Any, negative: Any) -> dict[str, Any]:
        """The conditioning arguments of a diffusers pipeline call of this family."""
        raise NotImplementedError

    def zeros_for_empty_negative(self, pipe: Any) -> bool:
        """Whether the family's pipelines use zeros, not the encoded "", for an empty negative prompt."""
        return False

    def needs_time_ids(self) -> bool:
        """Whether training needs each image's original size and crop (SDXL's micro-conditioning)."""
        return False

    # ------------------------------------------------------------------------------ export
    def export_tensors(self, vectors: torch.Tensor, widths: Mapping[str, int]) -> dict[str, torch.Tensor]:
        """{key: [n, width]} of an embedding in the A1111/ComfyUI layout, one tensor per tower."""
        out, start = {}, 0
        for tower in self.towers:
            width = int(widths[tower.text_encoder])
            out[tower.export_key] = vectors[:, start:start + width].contiguous()
            start += width
        if start != vectors.shape[-1]:
            raise EmogenError(f"The embedding is {vectors.shape[-1]}-d but the {self.title} text encoders take "
                              f"{start} in all.", "Export with the bundle of this model family.")
        return out

    def __repr__(self) -> str:
        return f"<Backbone {self.family}>"


def split_values(values: torch.Tensor | None, widths: list[int]) -> list[torch.Tensor | None]:
    """[B, K, sum(widths)] -> one [B, K, width] slice per tower (None stays None)."""
    if values is None:
        return [None] * len(widths)
    if values.shape[-1] != sum(widths):
        raise EmogenError(f"The emotion embedding is {values.shape[-1]}-d but the text encoders take {sum(widths)} "
                          f"({' + '.join(map(str, widths))}).", "Use the mapper bundle trained on this model.")
    return list(torch.split(values, widths, dim=-1))
