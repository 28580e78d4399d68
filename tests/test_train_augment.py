"""Whole-brain flips: image and side label move together, reproducibly."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from cfbrain.metrics.classification import FOUR_CLASSES
from cfbrain.train import SeededTransformDataset
from cfbrain.train.augment import RandomBrainFlip, flip_image, flip_label


def split_hemispheres(brain: torch.Tensor) -> torch.Tensor:
    """(S, H, W) radiological brain (patient right on image left) -> (2, S, H, W/2) [right, left mirrored]."""
    half = brain.shape[-1] // 2
    return torch.stack([brain[..., :half], brain[..., half:].flip(-1)])


def test_label_mapping():
    names = {FOUR_CLASSES[i]: FOUR_CLASSES[flip_label(i)] for i in range(4)}
    assert names == {"none": "none", "left": "right", "right": "left", "both": "both"}
    assert torch.equal(flip_label(torch.tensor([0, 1, 2, 3])), torch.tensor([0, 2, 1, 3]))


def test_hemisphere_swap_equals_mirroring_the_whole_brain():
    brain = torch.rand(3, 8, 10)
    assert torch.equal(flip_image(split_hemispheres(brain), "hemispheres"), split_hemispheres(brain.flip(-1)))
    assert torch.equal(flip_image(brain, "full"), brain.flip(-1))
    with pytest.raises(ValueError):
        flip_image(brain, "hemispheres")


def test_flip_probability_extremes():
    sample = {"image": torch.rand(2, 1, 4, 4), "label": 1, "id": "scan"}
    flipped = RandomBrainFlip(p=1.0)(sample, np.random.default_rng(0))
    assert flipped["label"] == 2 and flipped["id"] == "scan"
    assert torch.equal(flipped["image"], sample["image"].flip(0))
    assert RandomBrainFlip(p=0.0)(sample, np.random.default_rng(0)) is sample


def test_seeded_flips_are_reproducible_and_vary_with_epoch():
    images = torch.arange(40, dtype=torch.float32).reshape(20, 2, 1, 1, 1)
    base = [{"image": images[i], "label": 1} for i in range(20)]
    data = SeededTransformDataset(base, RandomBrainFlip(), seed=0)
    epoch0 = [data[i]["label"] for i in range(20)]
    assert epoch0 == [data[i]["label"] for i in range(20)]
    assert set(epoch0) == {1, 2}
    for i, label in enumerate(epoch0):
        flipped = label == 2
        assert torch.equal(data[i]["image"], images[i].flip(0) if flipped else images[i])
    data.set_epoch(1)
    assert [data[i]["label"] for i in range(20)] != epoch0
