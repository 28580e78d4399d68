"""Counterfactual scores that need the true answer (synthetic data only; beyond thesis 000).

Notation, per image: ``h`` the healthy prior given to the editing method, ``y`` the true lesioned image of
the same subject on the same intensity scale (``cfbrain.synth.mri.TruthSlices``), ``c`` the counterfactual,
all (H, W) in [0, 1]; ``L`` the lesion mask, ``B`` the prior's brain mask; ``G`` a Gaussian blur of
``smoothing_sigma`` pixels (identity at 0); ``dilate_k`` the k x k square dilation.

* Excluded lesion zone ``E = dilate_k(L)`` (``lesion_margin`` k = 5: the lesion and its 2-pixel
  partial-volume rim; the lesion itself is scored by the segmentation Dice).
* True indirect change ``D = G(y - h)``, reproduced change ``d = G(c - h)``.
* Indirect-effect region ``R = B ∩ not E ∩ {|D| > threshold}`` (threshold 0.02 of the [0, 1] range): where the
  pathology changes the image outside the lesion (atrophy, ventricle enlargement or compression, mass
  effect, midline shift).
* **Indirect-effect score** ``S = max(0, 1 - ||d - D||_R / ||D||_R)`` (L2 norms over ``R``): 1 when the
  counterfactual reproduces the true indirect change (``c = y``), 0 when it reproduces none of it
  (``c = h``) or errs by more than the change itself. NaN when ``R`` is empty (the slice shows no
  indirect effect); tables average over the other images. The blur is there because no generator can
  reproduce the acquisition noise of ``y``: the score compares structure, not noise texture. A relative
  L2 error (not a correlation) is used so that reproducing the right pattern with the wrong amplitude is
  penalised, and the clip at 0 keeps one wild image from dominating a mean.
* **Indirect-effect ceiling** of a method: ``S`` of the counterfactual ``h + E_m ⊙ (y - h)`` that copies the
  true change inside the region ``E_m`` the method may edit and keeps ``h`` elsewhere: the best score a
  method that leaves the rest of the image untouched can reach (0 for naïve RePaint, whose region is the
  lesion; 1 for methods that regenerate the whole image).
* **Fidelity error** ``F = mean over Q of |c - h|`` with ``Q = B ∩ not E ∩ not dilate_3(R)``: change where
  none should happen (lower is better; unblurred, since regenerating the noise of untouched tissue is a
  change too). Without a true lesioned image (real data), ``R`` is empty and ``F`` also counts any
  legitimate indirect change.

Arrays are (N, H, W) (or one (H, W) image); scores are float64 (N,).
"""
from __future__ import annotations

import numpy as np
from scipy import ndimage

from cfbrain.diffusion.masks import dilate

LESION_MARGIN = 5
THRESHOLD = 0.02
SMOOTHING_SIGMA = 1.0
_REGION_MARGIN = 3


def _stack(image: np.ndarray) -> np.ndarray:
    """(H, W) or (N, H, W) -> float64 (N, H, W)."""
    array = np.asarray(image, dtype=np.float64)
    if array.ndim == 2:
        array = array[None]
    if array.ndim != 3:
        raise ValueError(f"expected (N, H, W) images, got shape {array.shape}")
    return array


def _blur(images: np.ndarray, sigma: float) -> np.ndarray:
    return ndimage.gaussian_filter(images, (0, sigma, sigma)) if sigma > 0 else images


def _brain(brain_mask: np.ndarray | None, like: np.ndarray) -> np.ndarray:
    return np.ones(like.shape, bool) if brain_mask is None else _stack(brain_mask) > 0


def excluded_zone(lesion_mask: np.ndarray, lesion_margin: int = LESION_MARGIN) -> np.ndarray:
    """``E``: bool (N, H, W), the lesion dilated with a ``lesion_margin`` square."""
    return dilate((_stack(lesion_mask) > 0).astype(np.float32), lesion_margin) > 0


def indirect_effect_region(healthy: np.ndarray, lesioned: np.ndarray, lesion_mask: np.ndarray,
                           brain_mask: np.ndarray | None = None, *, lesion_margin: int = LESION_MARGIN,
                           threshold: float = THRESHOLD, smoothing_sigma: float = SMOOTHING_SIGMA) -> np.ndarray:
    """``R``: bool (N, H, W) where the true change ``G(y - h)`` exceeds ``threshold`` outside ``E``."""
    healthy, lesioned = _stack(healthy), _stack(lesioned)
    change = np.abs(_blur(lesioned - healthy, smoothing_sigma))
    return (change > threshold) & ~excluded_zone(lesion_mask, lesion_margin) & _brain(brain_mask, healthy)


def indirect_effect_score(healthy: np.ndarray, lesioned: np.ndarray, counterfactual: np.ndarray,
                          lesion_mask: np.ndarray, brain_mask: np.ndarray | None = None, *,
                          lesion_margin: int = LESION_MARGIN, threshold: float = THRESHOLD,
                          smoothing_sigma: float = SMOOTHING_SIGMA) -> np.ndarray:
    """``S`` per image (module docstring); NaN where the region ``R`` is empty."""
    healthy, lesioned, counterfactual = _stack(healthy), _stack(lesioned), _stack(counterfactual)
    region = indirect_effect_region(healthy, lesioned, lesion_mask, brain_mask, lesion_margin=lesion_margin,
                                    threshold=threshold, smoothing_sigma=smoothing_sigma)
    true_change = _blur(lesioned - healthy, smoothing_sigma)
    error = _blur(counterfactual - healthy, smoothing_sigma) - true_change
    error_norm = np.sqrt((error**2 * region).sum(axis=(1, 2)))
    change_norm = np.sqrt((true_change**2 * region).sum(axis=(1, 2)))
    with np.errstate(invalid="ignore", divide="ignore"):
        score = np.maximum(0.0, 1.0 - error_norm / change_norm)
    return np.where(region.any(axis=(1, 2)), score, np.nan)


def indirect_effect_ceiling(healthy: np.ndarray, lesioned: np.ndarray, editable: np.ndarray,
                            lesion_mask: np.ndarray, brain_mask: np.ndarray | None = None, **options) -> np.ndarray:
    """The indirect-effect ceiling per image (module docstring) of a method whose editable region is
    ``editable`` (N, H, W) bool; ``options`` as :func:`indirect_effect_score`."""
    healthy, lesioned = _stack(healthy), _stack(lesioned)
    best = healthy + (_stack(editable) > 0) * (lesioned - healthy)
    return indirect_effect_score(healthy, lesioned, best, lesion_mask, brain_mask, **options)


def fidelity_error(healthy: np.ndarray, counterfactual: np.ndarray, lesion_mask: np.ndarray,
                   brain_mask: np.ndarray | None = None, lesioned: np.ndarray | None = None, *,
                   lesion_margin: int = LESION_MARGIN, threshold: float = THRESHOLD,
                   smoothing_sigma: float = SMOOTHING_SIGMA) -> np.ndarray:
    """``F`` per image (module docstring); ``lesioned=None`` (real data) leaves ``R`` empty. NaN where
    ``Q`` is empty."""
    healthy, counterfactual = _stack(healthy), _stack(counterfactual)
    keep = _brain(brain_mask, healthy) & ~excluded_zone(lesion_mask, lesion_margin)
    if lesioned is not None:
        region = indirect_effect_region(healthy, lesioned, lesion_mask, brain_mask, lesion_margin=lesion_margin,
                                        threshold=threshold, smoothing_sigma=smoothing_sigma)
        keep &= ~(dilate(region.astype(np.float32), _REGION_MARGIN) > 0)
    difference = np.abs(counterfactual - healthy) * keep
    count = keep.sum(axis=(1, 2))
    return np.where(count > 0, difference.sum(axis=(1, 2)) / np.maximum(count, 1), np.nan)
