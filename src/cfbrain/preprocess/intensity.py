"""Pixel-range conversions: the one place where HU, [0, 1] and [-1, 1] meet (architecture contract 7).

Ranges used in cfbrain:

* CT volumes as loaded: Hounsfield units (HU), float32.
* CT tensors on disk and everywhere outside diffusion models: HU windowed to
  [low, high] and scaled to [0, 1] (thesis 003 step 8: window [0, 100] HU,
  then divide by 100). MRI slices use the same [0, 1] range.
* Inside diffusion models: [-1, 1].

Every function here accepts a numpy array or a torch tensor and returns the
same kind (numpy results are float32; torch keeps the tensor's dtype and device).
"""
from __future__ import annotations

from typing import TypeVar

import numpy as np
import torch

Array = TypeVar("Array", np.ndarray, torch.Tensor)

HU_WINDOW = (0.0, 100.0)
"""Thesis 003 step 8 soft-tissue window in HU."""


def _clip(x: Array, low: float, high: float) -> Array:
    if isinstance(x, torch.Tensor):
        return x.clamp(low, high)
    return np.clip(x, low, high)


def _float(x) -> np.ndarray | torch.Tensor:
    return x if isinstance(x, torch.Tensor) else np.asarray(x, dtype=np.float32)


def hu_to_unit(hu: Array, low: float = HU_WINDOW[0], high: float = HU_WINDOW[1]) -> Array:
    """HU -> [0, 1]: window to [low, high] HU and scale linearly (low -> 0, high -> 1).

    With the thesis window (0, 100) this is exactly ``clip(hu, 0, 100) / 100``.
    """
    if not high > low:
        raise ValueError(f"HU window must have high > low, got ({low}, {high})")
    return _clip((_float(hu) - low) / (high - low), 0.0, 1.0)


def unit_to_hu(x: Array, low: float = HU_WINDOW[0], high: float = HU_WINDOW[1]) -> Array:
    """[0, 1] -> HU inside the window (the inverse of :func:`hu_to_unit` for HU in [low, high])."""
    return _float(x) * (high - low) + low


def unit_to_diffusion(x: Array) -> Array:
    """[0, 1] -> [-1, 1], the range diffusion models work in."""
    return _float(x) * 2.0 - 1.0


def diffusion_to_unit(x: Array, clip: bool = True) -> Array:
    """[-1, 1] -> [0, 1]; samples that overshoot [-1, 1] are clipped unless ``clip=False``."""
    unit = (_float(x) + 1.0) / 2.0
    return _clip(unit, 0.0, 1.0) if clip else unit
