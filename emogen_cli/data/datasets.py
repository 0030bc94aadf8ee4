"""Torch datasets and a resumable, seeded sampler."""

from __future__ import annotations

import random
from collections.abc import Iterator
from pathlib import Path

import torch
from torch.utils.data import Dataset, Sampler

from emogen_cli.core.images import load_rgb, random_resized_crop, resize_center_crop, to_array


class EpochSampler(Sampler[int]):
    """A permutation that depends only on (seed, epoch): a resumed run sees the same order."""

    def __init__(self, n: int, seed: int, shuffle: bool = True) -> None:
        self.n, self.seed, self.shuffle, self.epoch = n, seed, shuffle, 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __iter__(self) -> Iterator[int]:
        if not self.shuffle:
            return iter(range(self.n))
        g = torch.Generator().manual_seed(self.seed * 7919 + self.epoch)
        return iter(torch.randperm(self.n, generator=g).tolist())

    def __len__(self) -> int:
        return self.n


class LabelledImages(Dataset):
    """(image, emotion index) pairs; training crops are random but a function of (seed, epoch, index)."""

    def __init__(self, root: Path, images: list[str], labels: list[int], size: int, mean, std, train: bool,
                 seed: int = 0) -> None:
        self.root, self.images, self.labels = Path(root), images, labels
        self.size, self.mean, self.std, self.train, self.seed, self.epoch = size, mean, std, train, seed, 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        image = load_rgb(self.root / self.images[i])
        if self.train:
            image = random_resized_crop(image, self.size, random.Random(f"{self.seed}/{self.epoch}/{i}"))
        else:
            image = resize_center_crop(image, self.size)
        return torch.from_numpy(to_array(image, self.mean, self.std)), self.labels[i]


def set_epoch(loader, sampler: EpochSampler, dataset, epoch: int) -> None:
    """Set the epoch everywhere it matters. accelerate's loaders reset their sampler's epoch to their own
    iteration count on every `iter()`, which a resumed run would get wrong, so set theirs too."""
    if hasattr(loader, "set_epoch"):
        loader.set_epoch(epoch)
    sampler.set_epoch(epoch)
    if hasattr(dataset, "set_epoch"):
        dataset.set_epoch(epoch)
