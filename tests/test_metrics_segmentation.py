"""Dice, IoU and boxes on hand-made masks (cfbrain.metrics.segmentation)."""
from __future__ import annotations

import numpy as np
import pytest

from cfbrain.metrics.segmentation import bounding_box, box_masks, box_scores, dice, dice_fid_product, iou


def masks() -> tuple[np.ndarray, np.ndarray]:
    predicted = np.zeros((4, 6, 6), np.uint8)
    target = np.zeros((4, 6, 6), np.uint8)
    predicted[0, 1:3, 1:3] = 1          # 4 px, target the same: perfect
    target[0, 1:3, 1:3] = 1
    predicted[1, 0:2, 0:4] = 1          # 8 px vs 4 px overlapping in 4
    target[1, 0:2, 2:4] = 1
    target[2, 3:5, 3:5] = 1             # missed lesion
    return predicted, target            # image 3: both empty


def test_dice_and_iou_per_image():
    predicted, target = masks()
    np.testing.assert_allclose(dice(predicted, target), [1.0, 2 * 4 / 12, 0.0, 1.0])
    np.testing.assert_allclose(iou(predicted, target), [1.0, 4 / 8, 0.0, 1.0])
    assert dice(predicted[1], target[1]).shape == (1,)
    with pytest.raises(ValueError, match="shapes differ"):
        dice(predicted, target[:2])


def test_bounding_boxes():
    mask = np.zeros((6, 6))
    mask[1, 4] = mask[3, 2] = 1
    assert bounding_box(mask) == (1, 3, 2, 4)
    assert bounding_box(np.zeros((3, 3))) is None
    box = box_masks(mask[None])[0]
    assert box.dtype == np.uint8 and box.sum() == 9 and box[1:4, 2:5].all()


def test_box_scores_compare_fitted_boxes():
    predicted = np.zeros((1, 8, 8), np.uint8)
    target = np.zeros((1, 8, 8), np.uint8)
    predicted[0, 2, 2] = predicted[0, 5, 5] = 1       # box 2..5 x 2..5: 16 px
    target[0, 2:6, 4:8] = 1                          # box 2..5 x 4..7: 16 px, overlap 4 x 2 = 8
    scores = box_scores(predicted, target)
    np.testing.assert_allclose(scores["box_dice"], [2 * 8 / 32])
    np.testing.assert_allclose(scores["box_iou"], [8 / 24])
    assert dice(predicted, target)[0] == pytest.approx(2 * 1 / 18)  # the raw masks share one pixel


def test_combined_score():
    assert dice_fid_product(0.63, 8.30) == pytest.approx(0.37 * 8.30)
    assert dice_fid_product(1.0, 50.0) == 0.0
