"""Reproducible, resumable data order and augmentation.

The order of epoch ``e`` of phase ``p`` is a permutation drawn from (seed, p, e) alone, so a resumed
run rebuilds it and skips the batches already seen. Augmentation draws from a generator seeded by
(seed, epoch, sample index), so it does not depend on worker count, batch position or resume point.
"""
from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, Sampler

from cfbrain.train.runtime import derived_seed

Transform = Callable[[Any, np.random.Generator], Any]
"""(sample, generator) -> augmented sample."""


class EpochPermutationSampler(Sampler[int]):
    """Indices of one epoch in a seeded random order, starting at position ``start``.

    Args:
        n: dataset length.
        keys: integers the permutation depends on (run seed, phase, epoch).
        start: number of leading indices to skip (samples already consumed before a resume).
    """

    def __init__(self, n: int, keys: tuple[int, ...], start: int = 0) -> None:
        self.order = np.random.default_rng(list(keys)).permutation(n)[start:]

    def __iter__(self) -> Iterator[int]:
        return iter(self.order.tolist())

    def __len__(self) -> int:
        return len(self.order)


class SeededTransformDataset(Dataset):
    """``dataset`` with ``transform(sample, generator)`` applied, the generator seeded by
    (seed, epoch, index). Call ``set_epoch`` before each epoch (the training loop does)."""

    def __init__(self, dataset: Dataset, transform: Transform, seed: int) -> None:
        self.dataset, self.transform, self.seed = dataset, transform, seed
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, index: int) -> Any:
        generator = np.random.default_rng([self.seed, self.epoch, index])
        return self.transform(self.dataset[index], generator)


def epoch_loader(dataset: Dataset, *, batch_size: int, keys: tuple[int, ...], start_batch: int = 0,
                 shuffle: bool = True, num_workers: int = 0, drop_last: bool = False,
                 collate_fn: Callable | None = None, pin_memory: bool = False) -> DataLoader:
    """DataLoader over one epoch; with ``shuffle`` the order comes from ``keys`` and the first
    ``start_batch`` batches are skipped. Worker seeds come from ``keys`` too, never from the global RNG."""
    start = start_batch * batch_size
    sampler = (EpochPermutationSampler(len(dataset), keys, start) if shuffle
               else range(start, len(dataset)))
    generator = torch.Generator().manual_seed(derived_seed(*keys))
    return DataLoader(dataset, batch_size=batch_size, sampler=sampler, num_workers=num_workers,
                      drop_last=drop_last, collate_fn=collate_fn, generator=generator,
                      pin_memory=pin_memory)


def batches_per_epoch(n: int, batch_size: int, drop_last: bool) -> int:
    """Optimizer steps in one epoch of ``n`` samples."""
    return n // batch_size if drop_last else -(-n // batch_size)
