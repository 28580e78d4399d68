"""Overlap of lesion masks: Dice, IoU, bounding boxes and the combined (1 - Dice) x FID (thesis 000 §2.3, §4.1).

Masks are arrays (N, H, W) (or one (H, W) image), nonzero = lesion. Scores are per image, float64 (N,):

* Dice ``2 |P ∩ T| / (|P| + |T|)`` (eq. 2.11), IoU ``|P ∩ T| / |P ∪ T|`` (eq. 2.12); both are 1 when
  prediction and target are both empty (nothing asked, nothing found) and 0 when exactly one is empty.
* Boxes (thesis 000 §4.1, bounding-box experiments): the filled axis-aligned box enclosing all lesion
  pixels of an image (:func:`cfbrain.diffusion.masks.bounding_box_mask`, the box the models were
  conditioned on); box Dice / IoU compare the box fitted to the prediction with the box of the target.
* ``(1 - Dice) x FID``: the thesis's combined score (lower is better), from the mean Dice and mean FID.
"""
from __future__ import annotations

import numpy as np

from cfbrain.diffusion.masks import bounding_box_mask


def _binary_pair(predicted: np.ndarray, target: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Both masks as bool (N, H*W); shapes must agree."""
    predicted, target = np.asarray(predicted), np.asarray(target)
    if predicted.shape != target.shape:
        raise ValueError(f"mask shapes differ: {predicted.shape} vs {target.shape}")
    if predicted.ndim < 2:
        raise ValueError(f"expected masks of shape (..., H, W), got {predicted.shape}")
    height, width = predicted.shape[-2:]
    return predicted.reshape(-1, height * width) > 0, target.reshape(-1, height * width) > 0


def dice(predicted: np.ndarray, target: np.ndarray) -> np.ndarray:
    """Per-image Dice (N,) float64 (module docstring)."""
    predicted, target = _binary_pair(predicted, target)
    overlap = (predicted & target).sum(axis=1)
    total = predicted.sum(axis=1) + target.sum(axis=1)
    return np.where(total > 0, 2.0 * overlap / np.maximum(total, 1), 1.0)


def iou(predicted: np.ndarray, target: np.ndarray) -> np.ndarray:
    """Per-image intersection over union (N,) float64 (module docstring)."""
    predicted, target = _binary_pair(predicted, target)
    overlap = (predicted & target).sum(axis=1)
    union = (predicted | target).sum(axis=1)
    return np.where(union > 0, overlap / np.maximum(union, 1), 1.0)


def bounding_box(mask: np.ndarray) -> tuple[int, int, int, int] | None:
    """(first row, last row, first column, last column), inclusive, of the nonzero pixels of one (H, W)
    mask; None when it is empty."""
    rows, cols = np.nonzero(np.asarray(mask))
    if rows.size == 0:
        return None
    return int(rows.min()), int(rows.max()), int(cols.min()), int(cols.max())


def box_masks(masks: np.ndarray) -> np.ndarray:
    """Filled bounding box of each (H, W) mask, uint8, same shape (empty masks stay empty)."""
    return (bounding_box_mask(np.asarray(masks, dtype=np.float32)) > 0).astype(np.uint8)


def box_scores(predicted: np.ndarray, target: np.ndarray) -> dict[str, np.ndarray]:
    """``box_dice`` and ``box_iou`` (N,) of the box fitted to each prediction against the target's box."""
    predicted_boxes, target_boxes = box_masks(predicted), box_masks(target)
    return {"box_dice": dice(predicted_boxes, target_boxes), "box_iou": iou(predicted_boxes, target_boxes)}


def dice_fid_product(mean_dice: float, fid: float) -> float:
    """The thesis's combined score ``(1 - Dice) x FID`` (lower is better)."""
    return (1.0 - float(mean_dice)) * float(fid)
