"""The paper's five metrics as functions of features and predictions (supplementary, section 3).

Models produce the inputs (evaluate.py); these functions only do the arithmetic, so each can be
checked against hand-computed values.
"""

from __future__ import annotations

import random

import torch
import torch.nn.functional as F
from torch import nn


def frechet_distance(real: torch.Tensor, fake: torch.Tensor) -> float:
    """FID between two feature sets [N, D]: torchmetrics' Fréchet distance on precomputed features."""
    from torchmetrics.image.fid import FrechetInceptionDistance

    identity = nn.Identity()
    identity.num_features = real.shape[1]  # features are given: the "feature extractor" passes them through
    fid = FrechetInceptionDistance(feature=identity)
    fid.update(real.double(), real=True)
    fid.update(fake.double(), real=False)
    return max(float(fid.compute()), 0.0)


def random_pairs(n: int, count: int, rng: random.Random) -> list[tuple[int, int]]:
    """`count` random pairs of two different images out of `n`, as the official script draws them."""
    return [tuple(rng.sample(range(n), 2)) for _ in range(count)] if n >= 2 else []


def pair_mse(features: torch.Tensor, pairs: list[tuple[int, int]]) -> torch.Tensor:
    """Per pair, the mean squared difference of the two (unnormalised CLIP) embeddings: the official Sem-D."""
    a, b = zip(*pairs)
    return (features[list(a)] - features[list(b)]).pow(2).mean(-1)


def pair_cosine_distance(features: torch.Tensor, pairs: list[tuple[int, int]]) -> torch.Tensor:
    """Per pair, 1 - cosine similarity of the two embeddings (the official script's second Sem-D variant)."""
    a, b = zip(*pairs)
    return 1 - F.cosine_similarity(features[list(a)], features[list(b)], dim=-1)


def emotion_accuracy(logits: torch.Tensor, targets: torch.Tensor) -> float:
    """Emo-A: the share of images the emotion classifier assigns to their target emotion."""
    return (logits.argmax(-1) == targets).float().mean().item()


def semantic_clarity(object_logits: torch.Tensor, scene_logits: torch.Tensor | None = None) -> torch.Tensor:
    """Sem-C per image: max(top-1 probability of the object classifier, of the scene classifier)."""
    clarity = object_logits.softmax(-1).amax(-1)
    if scene_logits is not None:
        clarity = torch.maximum(clarity, scene_logits.softmax(-1).amax(-1))
    return clarity
