"""Mask construction and morphology on small known arrays (and against scipy.ndimage)."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy import ndimage

from cfbrain.diffusion.masks import (
    bounding_box_mask,
    difuse_mask,
    dilate,
    erode,
    gaussian_blur,
    grey_closing,
    grey_opening,
    mededit_inpainting_mask,
)

torch.set_num_threads(1)


def single_pixel(size: int = 64, row: int = 30, col: int = 40) -> np.ndarray:
    image = np.zeros((size, size), dtype=np.float32)
    image[row, col] = 1
    return image


@pytest.mark.parametrize("kernel_size", [25, 20, 5, 1])
def test_dilation_of_a_pixel_is_a_k_by_k_square_placed_like_scipy(kernel_size):
    dilated = dilate(single_pixel(), kernel_size)
    assert dilated.sum() == kernel_size**2
    rows, cols = np.nonzero(dilated)
    # the max-filter window spans -(k // 2) .. k - 1 - k // 2, so the pixel spreads the mirrored way
    assert rows.min() == 30 - (kernel_size - 1 - kernel_size // 2) and rows.max() == 30 + kernel_size // 2
    assert cols.min() == 40 - (kernel_size - 1 - kernel_size // 2)
    np.testing.assert_array_equal(dilated, ndimage.maximum_filter(single_pixel(), size=kernel_size))


def test_erosion_and_dilation_agree_with_scipy_at_the_border():
    image = np.random.default_rng(0).random((2, 1, 17, 13)).astype(np.float32)
    for ours, theirs in [(dilate, ndimage.maximum_filter), (erode, ndimage.minimum_filter)]:
        expected = np.stack([theirs(im[0], size=4, mode="nearest") for im in image])[:, None]
        np.testing.assert_array_equal(ours(image, 4), expected)


def test_opening_and_closing_agree_with_scipy():
    image = np.random.default_rng(1).random((2, 1, 20, 20)).astype(np.float32)
    opened = np.stack([ndimage.grey_opening(im[0], size=5, mode="nearest") for im in image])[:, None]
    closed = np.stack([ndimage.grey_closing(im[0], size=5, mode="nearest") for im in image])[:, None]
    np.testing.assert_array_equal(grey_opening(image, 5), opened)
    np.testing.assert_array_equal(grey_closing(torch.from_numpy(image), 5).numpy(), closed)
    with pytest.raises(ValueError):
        grey_opening(image, 4)


def test_gaussian_blur_matches_scipy_with_the_opencv_sigma():
    image = np.random.default_rng(2).random((3, 16, 16))
    expected = np.stack([ndimage.gaussian_filter(im, sigma=1.1, truncate=2 / 1.1, mode="mirror") for im in image])
    np.testing.assert_allclose(gaussian_blur(image, 5), expected, rtol=0, atol=1e-12)


def test_mededit_mask_is_the_dilated_pathology_inside_the_brain():
    pathology = single_pixel()
    brain = np.zeros_like(pathology)
    brain[:, :45] = 1  # the brain ends 5 px right of the lesion; the 25 px square would reach 12 px
    mask = mededit_inpainting_mask(pathology[None, None], brain[None, None], kernel_size=25)
    assert mask.shape == (1, 1, 64, 64)
    expected = ndimage.binary_dilation(pathology > 0, np.ones((25, 25))) & (brain > 0)
    np.testing.assert_array_equal(mask[0, 0], expected.astype(np.float32))
    assert mask[0, 0, 30, 44] == 1 and mask[0, 0, 30, 45] == 0 and mask.sum() == 25 * (45 - 28)


def test_mededit_mask_keeps_torch_device_and_batch_independence():
    pathology = torch.zeros(2, 1, 32, 32)
    pathology[0, 0, 5, 5] = 1
    pathology[1, 0, 20, 20] = 1
    mask = mededit_inpainting_mask(pathology, torch.ones(2, 32, 32)[:, None], kernel_size=3)
    assert isinstance(mask, torch.Tensor) and mask.shape == (2, 1, 32, 32)
    assert mask[0].sum() == 9 and mask[1].sum() == 9 and mask[0, 0, 20, 20] == 0


def test_bounding_box_fits_all_lesion_pixels_or_each_component():
    lesion = np.zeros((2, 20, 20), dtype=np.uint8)
    lesion[0, 3, 4] = lesion[0, 6, 9] = 1  # two specks -> one box rows 3..6, cols 4..9
    lesion[0, 15:17, 15:18] = 1
    box = bounding_box_mask(lesion)
    assert box.shape == (2, 20, 20) and box.dtype == np.float32
    assert box[0].sum() == (16 - 3 + 1) * (17 - 4 + 1)
    assert box[1].sum() == 0  # an empty lesion gives an empty box
    components = bounding_box_mask(lesion, per_component=True)
    expected = np.zeros((20, 20), dtype=np.float32)
    expected[3, 4] = expected[6, 9] = 1
    expected[15:17, 15:18] = 1
    np.testing.assert_array_equal(components[0], expected)
    np.testing.assert_array_equal(bounding_box_mask(torch.from_numpy(lesion)).numpy(), box)


def test_authors_difuse_mask_keeps_the_top_decile_per_image_and_grows_it_by_the_blur():
    ramp = np.arange(100, dtype=np.float32).reshape(10, 10)  # 90th percentile 89.1: keeps the last row
    saliency = np.stack([ramp, ramp.T * 1000])[:, None]
    mask = difuse_mask(saliency, order="threshold_blur")
    expected_rows = np.zeros((10, 10), dtype=np.float32)
    expected_rows[7:] = 1  # the 5 x 5 blur spreads the kept row two pixels
    np.testing.assert_array_equal(mask[0, 0], expected_rows)
    np.testing.assert_array_equal(mask[1, 0], expected_rows.T)
    # a threshold above the blur's tail (0.07 x ~95 two rows away) keeps one extra row only
    np.testing.assert_array_equal(difuse_mask(saliency[:1], order="threshold_blur", threshold=10.0)[0, 0].sum(axis=1), [0] * 8 + [10, 10])


def test_difuse_mask_of_a_flat_map_is_empty():
    for order in ("blur_threshold", "threshold_blur"):
        assert difuse_mask(torch.ones(1, 1, 8, 8), order=order).sum() == 0
