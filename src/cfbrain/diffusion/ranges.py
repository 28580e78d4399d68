"""The one place where images enter and leave the diffusion models' pixel range (ARCHITECTURE.md contract 7).

Stages outside ``cfbrain.diffusion`` keep images in [0, 1] (HU-windowed CT, max-normalised MRI); diffusion
networks and samplers work in [-1, 1]. Masks stay {0, 1} everywhere.
"""
from __future__ import annotations

from torch import Tensor


def to_diffusion_range(image: Tensor) -> Tensor:
    """[0, 1] -> [-1, 1]."""
    return image * 2 - 1


def from_diffusion_range(image: Tensor) -> Tensor:
    """[-1, 1] -> [0, 1], clamped (samplers may overshoot the range slightly)."""
    return ((image + 1) / 2).clamp(0.0, 1.0)
