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


class GaussianStats:
    """Running sums of a stream of feature batches [B, D] in float64 (as torchmetrics' FID keeps them):
    the mean and covariance of any number of images in O(D^2) memory."""

    def __init__(self) -> None:
        self.count = 0
        self.sum: torch.Tensor | None = None
        self.outer: torch.Tensor | None = None

    def update(self, features: torch.Tensor) -> None:
        if not len(features):
            return
        f = features.double()
        if self.sum is None:
            self.sum = torch.zeros(f.shape[1], dtype=torch.float64)
            self.outer = torch.zeros(f.shape[1], f.shape[1], dtype=torch.float64)
        self.sum += f.sum(0)
        self.outer += f.t().mm(f)
        self.count += len(f)

    def mean_cov(self) -> tuple[torch.Tensor, torch.Tensor]:
        mean = (self.sum / self.count)[None]
        return mean[0], (self.outer - self.count * mean.t().mm(mean)) / (self.count - 1)


def frechet_from_stats(real: GaussianStats, fake: GaussianStats) -> float:
    """FID from running sums: the arithmetic of torchmetrics' FrechetInceptionDistance.compute (its
    `_compute_fid`), so `frechet_distance(real, fake)` and this agree to float64 rounding."""
    from torchmetrics.image.fid import _compute_fid

    if real.count < 2 or fake.count < 2:
        raise ValueError("FID needs at least two images on each side.")
    (mu_r, cov_r), (mu_f, cov_f) = real.mean_cov(), fake.mean_cov()
    return max(float(_compute_fid(mu_r, cov_r, mu_f, cov_f)), 0.0)


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
