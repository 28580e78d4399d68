"""Masks that steer the samplers (MedEdit, RePaint, Dif-fuse) and the morphology used on anomaly maps.

Every function takes a torch tensor or a numpy array of shape ``(..., H, W)`` (any leading batch/channel
dimensions, e.g. ``(B, 1, H, W)`` or ``(B, H, W)``), works image by image, and returns the same container
type and shape. Binary outputs are float ``{0, 1}`` (float32 unless the input was a floating array of
another precision). Torch inputs stay on their device.

Square structuring elements follow OpenCV/scipy.ndimage: a ``k × k`` window covers offsets
``-(k // 2) .. k - 1 - k // 2`` around each pixel, so even ``k`` (MedEdit's boxes, k = 20) is supported by
dilation. Pixels outside the image are ignored by max/min filters (scipy ``mode="nearest"`` gives the same
result); the Gaussian blur reflects at the border (OpenCV's default ``BORDER_REFLECT_101``).
"""
from __future__ import annotations

from collections.abc import Callable
from typing import Literal, TypeVar

import numpy as np
import torch
import torch.nn.functional as F
from scipy import ndimage
from torch import Tensor

Array = TypeVar("Array", Tensor, np.ndarray)


def _as_image_batch(image: Array) -> tuple[Tensor, Callable[[Tensor], Array]]:
    """View ``(..., H, W)`` as a float ``(N, 1, H, W)`` tensor, and a function restoring type and shape."""
    from_numpy = isinstance(image, np.ndarray)
    tensor = torch.from_numpy(np.ascontiguousarray(image)) if from_numpy else image
    if tensor.ndim < 2:
        raise ValueError(f"expected an array of shape (..., H, W), got shape {tuple(tensor.shape)}")
    leading, height, width = tensor.shape[:-2], tensor.shape[-2], tensor.shape[-1]
    dtype = tensor.dtype if tensor.is_floating_point() else torch.float32
    batch = tensor.reshape(-1, 1, height, width).to(dtype)

    def restore(result: Tensor) -> Array:
        result = result.reshape(*leading, height, width)
        return result.cpu().numpy() if from_numpy else result

    return batch, restore


def _max_filter(batch: Tensor, kernel_size: int) -> Tensor:
    """Max over the ``k × k`` window of each pixel of ``(N, 1, H, W)``; out-of-image pixels ignored."""
    if kernel_size < 1:
        raise ValueError(f"kernel_size must be >= 1, got {kernel_size}")
    before, after = kernel_size // 2, kernel_size - 1 - kernel_size // 2
    padded = F.pad(batch, (before, after, before, after), value=-torch.inf)
    return F.max_pool2d(padded, kernel_size, stride=1)


def _require_odd(kernel_size: int) -> None:
    if kernel_size % 2 == 0:
        raise ValueError(f"opening/closing need an odd kernel size, got {kernel_size}")


def dilate(image: Array, kernel_size: int) -> Array:
    """Grey (or binary, for {0, 1} input) dilation with a ``k × k`` square: the max over each window."""
    batch, restore = _as_image_batch(image)
    return restore(_max_filter(batch, kernel_size))


def erode(image: Array, kernel_size: int) -> Array:
    """Grey (or binary) erosion with a ``k × k`` square: the min over each window."""
    batch, restore = _as_image_batch(image)
    return restore(-_max_filter(-batch, kernel_size))


def grey_opening(image: Array, kernel_size: int = 5) -> Array:
    """Erosion then dilation (odd ``k``); removes bright specks smaller than the kernel."""
    _require_odd(kernel_size)
    batch, restore = _as_image_batch(image)
    return restore(_max_filter(-_max_filter(-batch, kernel_size), kernel_size))


def grey_closing(image: Array, kernel_size: int = 5) -> Array:
    """Dilation then erosion (odd ``k``); fills dark holes smaller than the kernel."""
    _require_odd(kernel_size)
    batch, restore = _as_image_batch(image)
    return restore(-_max_filter(-_max_filter(batch, kernel_size), kernel_size))


def gaussian_blur(image: Array, kernel_size: int = 5, sigma: float | None = None) -> Array:
    """Separable Gaussian blur with a ``k × k`` kernel (odd ``k``), reflecting at the border.

    ``sigma=None`` uses OpenCV's rule for ``GaussianBlur(..., sigmaX=0)``:
    ``0.3 ((k - 1) / 2 - 1) + 0.8`` (1.1 for k = 5).
    """
    _require_odd(kernel_size)
    if sigma is None:
        sigma = 0.3 * ((kernel_size - 1) / 2 - 1) + 0.8
    batch, restore = _as_image_batch(image)
    offsets = torch.arange(kernel_size, dtype=batch.dtype, device=batch.device) - kernel_size // 2
    weights = torch.exp(-(offsets**2) / (2 * sigma**2))
    weights = weights / weights.sum()
    half = kernel_size // 2
    padded = F.pad(batch, (half, half, half, half), mode="reflect")
    blurred = F.conv2d(padded, weights.view(1, 1, 1, -1))
    blurred = F.conv2d(blurred, weights.view(1, 1, -1, 1))
    return restore(blurred)


def mededit_inpainting_mask(pathology: Array, brain: Array, kernel_size: int = 25) -> Array:
    """MedEdit's inpainting mask ``m``: the pathology mask dilated with a ``k × k`` kernel, inside the brain.

    Thesis 000 Algorithm 1 line 3 (``m = dilute(p, k)``) and §4.1: k = 25 for lesion masks, k = 20 for
    bounding boxes. ``pathology``, ``brain``: ``(..., H, W)``, nonzero = inside; returns ``{0, 1}``. Pathology
    pixels outside the brain mask are not inpainted.
    """
    path_batch, restore = _as_image_batch(pathology)
    brain_batch, _ = _as_image_batch(brain)
    dilated = _max_filter((path_batch > 0).to(path_batch.dtype), kernel_size)
    return restore(dilated * (brain_batch.to(dilated.device) > 0).to(dilated.dtype))


def bounding_box_mask(lesion: Array, per_component: bool = False) -> Array:
    """Filled axis-aligned bounding box(es) of the nonzero pixels of each image (thesis 000 §4.1).

    ``per_component=False``: one box enclosing all lesion pixels of the image; ``True``: one box per
    8-connected component. Images without lesion pixels give an empty mask.
    """
    batch, restore = _as_image_batch(lesion)
    inside = batch[:, 0] > 0
    if per_component:
        boxes = np.zeros(inside.shape, dtype=bool)
        for index, image in enumerate(inside.cpu().numpy()):
            labels, _ = ndimage.label(image, structure=np.ones((3, 3), dtype=bool))
            for rows_cols in ndimage.find_objects(labels):
                boxes[(index, *rows_cols)] = True
        return restore(torch.from_numpy(boxes).to(device=batch.device, dtype=batch.dtype))
    rows, cols = inside.any(dim=2), inside.any(dim=1)
    height, width = inside.shape[1:]
    first_row, last_row = rows.int().argmax(1), height - 1 - rows.flip(1).int().argmax(1)
    first_col, last_col = cols.int().argmax(1), width - 1 - cols.flip(1).int().argmax(1)
    row_index = torch.arange(height, device=batch.device)
    col_index = torch.arange(width, device=batch.device)
    in_rows = (row_index >= first_row[:, None]) & (row_index <= last_row[:, None]) & rows.any(1, keepdim=True)
    in_cols = (col_index >= first_col[:, None]) & (col_index <= last_col[:, None])
    return restore((in_rows[:, :, None] & in_cols[:, None, :]).to(batch.dtype))


MaskOrder = Literal["blur_threshold", "threshold_blur"]


def difuse_mask(
    saliency: Array,
    percentile: float = 90.0,
    blur_kernel_size: int = 5,
    blur_sigma: float | None = None,
    order: MaskOrder = "blur_threshold",
    threshold: float = 0.0,
) -> Array:
    """Dif-fuse's editing mask ``m`` from a non-negative saliency map (thesis 003 Algorithm 2 lines 1-2).

    ``order="blur_threshold"`` (Algorithm 2, the default): smooth the map with a ``k × k`` Gaussian
    (:func:`gaussian_blur`), then keep the pixels strictly above the smoothed map's per-image ``percentile``
    τ (linear interpolation, as numpy): about ``100 - percentile`` % of the pixels.
    ``order="threshold_blur"`` (the authors' code, method notes): keep the saliency strictly above its
    per-image ``percentile``, blur the kept values and binarise at ``> threshold``; with ``threshold = 0``
    every kept pixel grows to its ``k × k`` neighbourhood (the blur's support), so the mask is the kept
    region dilated a little. Returns ``{0, 1}``; a flat map gives an empty mask.
    """
    if order not in ("blur_threshold", "threshold_blur"):
        raise ValueError(f"order must be 'blur_threshold' or 'threshold_blur', got {order!r}")
    batch, restore = _as_image_batch(saliency)

    def above_percentile(values: Tensor) -> Tensor:
        cutoff = torch.quantile(values.flatten(1), percentile / 100.0, dim=1).view(-1, 1, 1, 1)
        return values > cutoff

    if order == "blur_threshold":
        return restore(above_percentile(gaussian_blur(batch, blur_kernel_size, blur_sigma)).to(batch.dtype))
    kept = torch.where(above_percentile(batch), batch, torch.zeros_like(batch))
    blurred = gaussian_blur(kept, blur_kernel_size, blur_sigma)
    return restore((blurred > threshold).to(batch.dtype))
