"""Stage 2's mapping network and the self-describing mapper bundle that inference loads.

A bundle folder holds config.json (class order, placeholder token, base/CLIP model ids, dims),
mapper.safetensors, emotion_space.safetensors, text_projection.safetensors (CLIP's, for the
semantic space) and attributes.json (the attribute names, their emotion confidence and the L_attr
vocabulary with its source). config.json also records the semantic token, the attribute vocabulary
kind and the emotion probe used (emotion_probe.safetensors beside it when there is one).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file
from torch import nn

from emogen_cli.config import Config
from emogen_cli.errors import EmogenError
from emogen_cli.encoder import EmotionSpace, read_bundle_config

FORMAT = "emogen-mapper"


class MappingNetwork(nn.Module):
    """Emotion space -> CLIP token embedding: Linear -> ReLU -> ... -> Linear (2 layers: 768-1024-768)."""

    def __init__(self, in_dim: int = 768, hidden_dim: int = 1024, out_dim: int = 768, layers: int = 2) -> None:
        super().__init__()
        dims = [in_dim] + [hidden_dim] * (layers - 1) + [out_dim]
        modules: list[nn.Module] = []
        for i, (a, b) in enumerate(zip(dims, dims[1:])):
            modules.append(nn.Linear(a, b))
            if i < layers - 1:
                modules.append(nn.ReLU())
        self.mlp = nn.Sequential(*modules)

    def forward(self, emotion_vectors: torch.Tensor) -> torch.Tensor:
        return self.mlp(emotion_vectors)


def mapper_loss(l_ldm: torch.Tensor, l_attr: torch.Tensor, l_emo: torch.Tensor, confidence: torch.Tensor,
                lambda_attr: float, lambda_emo: float, threshold: float) -> torch.Tensor:
    """Per-sample EmoGen loss: (1 - c) L_ldm + lambda_attr c L_attr + lambda_emo L_emo, c < threshold -> 0."""
    c = torch.where(confidence < threshold, torch.zeros_like(confidence), confidence)
    return (1 - c) * l_ldm + lambda_attr * c * l_attr + lambda_emo * l_emo


_TRAINED_WITH = {"pretrained": "base_model", "clip": "clip_model"}


def trained_model(config: Config, key: str, bundle_config: dict[str, Any]) -> str:
    """config.model.<key> ("pretrained" or "clip") if the user set it (by file or option, even to the built-in
    default), else the model the mapper was trained with."""
    configured = getattr(config.model, key)
    if config.is_explicit(f"model.{key}"):
        return configured
    return bundle_config.get(_TRAINED_WITH[key]) or configured


@dataclass
class MapperBundle:
    config: dict[str, Any]
    mapper: MappingNetwork
    space: EmotionSpace
    projection: torch.Tensor  # [P, D]: CLIP's text_projection weight
    attributes: dict[str, Any]

    @property
    def emotions(self) -> tuple[str, ...]:
        return tuple(self.config["emotions"])

    @property
    def semantic_token(self) -> str:
        """Where the semantic vector is pooled; bundles written before it was recorded pooled at end-of-text."""
        return self.config.get("semantic_token", "eos")

    @property
    def vocabulary(self) -> list[str]:
        """The L_attr classes the mapper was trained with (all attribute names for older bundles)."""
        return list((self.attributes.get("vocabulary") or {}).get("names") or self.attributes.get("names") or [])

    def base_model(self, config: Config) -> str:
        return trained_model(config, "pretrained", self.config)

    def clip_model(self, config: Config) -> str:
        return trained_model(config, "clip", self.config)

    def check_text_width(self, width: int, base: str) -> None:
        """Refuse a text encoder whose width differs from the embeddings the mapper writes."""
        if self.config["out_dim"] != width:
            raise EmogenError(f"The mapper writes {self.config['out_dim']}-d embeddings but the text encoder of "
                              f"'{base}' is {width}-d.",
                              f"Use the base model it was trained on: {self.config['base_model']}.")

    def save(self, path: Path) -> None:
        path.mkdir(parents=True, exist_ok=True)
        save_file({k: v.detach().cpu().contiguous() for k, v in self.mapper.state_dict().items()},
                  str(path / "mapper.safetensors"))
        self.space.save(path / "emotion_space.safetensors")
        save_file({"weight": self.projection.detach().cpu().contiguous()}, str(path / "text_projection.safetensors"))
        (path / "attributes.json").write_text(json.dumps(self.attributes, indent=1))
        (path / "config.json").write_text(json.dumps(self.config, indent=2))  # last: marks the bundle complete


def load_mapper(path: str | Path) -> MapperBundle:
    path = Path(path)
    config = read_bundle_config(path, FORMAT, "emogen train-mapper")
    mapper = MappingNetwork(config["in_dim"], config["hidden_dim"], config["out_dim"], config["layers"])
    mapper.load_state_dict(load_file(str(path / "mapper.safetensors")))
    mapper.eval()
    return MapperBundle(config, mapper, EmotionSpace.load(path / "emotion_space.safetensors"),
                        load_file(str(path / "text_projection.safetensors"))["weight"],
                        json.loads((path / "attributes.json").read_text()))
