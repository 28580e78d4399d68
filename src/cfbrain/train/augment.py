"""Whole-brain left-right flips that carry the side label along (thesis 003 training augmentation).

Samples are dicts with ``image``, ``label`` (class index in none, left, right, both order) and optionally
``saliency`` (a map laid out like the image, flipped with it). For hemisphere inputs (2, S, H, W/2) =
[right, left-mirrored], mirroring the whole brain turns the old left hemisphere into the new right one
and vice versa, each already in the mirrored convention, so the flip is a swap of the two hemisphere
tensors. Full-brain inputs (S, H, W) are mirrored along W.
"""
from __future__ import annotations

from typing import Any

import numpy as np
import torch

SIDE_SWAP = (0, 2, 1, 3)
"""Four-class label after a left-right flip: none and both stay, left and right trade places."""
LAYOUTS = ("hemispheres", "full")
FLIPPED = ("image", "saliency")
"""Sample keys mirrored together: a saliency map follows its image."""


def flip_label(label: Any) -> Any:
    """The label of the mirrored brain (int, numpy integer or integer tensor of any shape)."""
    if isinstance(label, torch.Tensor):
        return torch.tensor(SIDE_SWAP, dtype=label.dtype, device=label.device)[label.long()]
    return SIDE_SWAP[int(label)]


def flip_image(image: torch.Tensor, layout: str) -> torch.Tensor:
    """Mirror a (2, S, H, W/2) hemisphere pair (``hemispheres``) or a (S, H, W) brain (``full``)."""
    if layout == "hemispheres":
        if image.shape[0] != 2:
            raise ValueError(f"hemisphere images have 2 as first dimension, got {tuple(image.shape)}")
        return image.flip(0)
    if layout == "full":
        return image.flip(-1)
    raise ValueError(f"layout must be one of {LAYOUTS}, got {layout!r}")


class RandomBrainFlip:
    """With probability ``p`` mirror the brain (image and saliency map) left-right and swap the side label.

    Use through ``SeededTransformDataset`` so the generator, and so every flip, is reproducible.
    """

    def __init__(self, p: float = 0.5, layout: str = "hemispheres") -> None:
        if layout not in LAYOUTS:
            raise ValueError(f"layout must be one of {LAYOUTS}, got {layout!r}")
        self.p, self.layout = p, layout

    def __call__(self, sample: dict[str, Any], generator: np.random.Generator) -> dict[str, Any]:
        if generator.random() >= self.p:
            return sample
        flipped = {key: flip_image(torch.as_tensor(sample[key]), self.layout) for key in FLIPPED if key in sample}
        return {**sample, **flipped, "label": flip_label(sample["label"])}
