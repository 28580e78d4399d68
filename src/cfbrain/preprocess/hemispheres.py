"""Split preprocessed slices into the two hemispheres the MTL hemisphere CNN reads (thesis 003, ch. 4).

Input: (S, H, W) in the display convention (col 0 = patient right side of the image).
Output: (2, S, H, W // 2) = [right hemisphere, left hemisphere], both presented
AS A RIGHT HEMISPHERE IN RADIOLOGICAL DISPLAY: lateral surface towards column 0,
midline at column W // 2 - 1. The right half is taken as is; the left half is
flipped horizontally. Consequence: a horizontal flip of the whole (midline-centred)
image is the same as swapping the two halves, which is how a flip augmentation
swaps the side label.

Each slice is first shifted by a whole number of columns (zero fill, no
interpolation, no wrap-around) so that its midline lies on the boundary between
columns W/2 - 1 and W/2, i.e. at fractional column (W - 1) / 2.
"""
from __future__ import annotations

import numpy as np


def centre_columns(n_slices: int, width: int) -> np.ndarray:
    """The fallback midline: the image centre (W - 1) / 2 for every slice, float32 (S,)."""
    return np.full(n_slices, (width - 1) / 2, dtype=np.float32)


def midline_shifts(midline_col: np.ndarray, width: int) -> np.ndarray:
    """Whole-column shift per slice that moves ``midline_col`` (S,) to (W - 1) / 2: int64 (S,)."""
    return np.rint((width - 1) / 2 - np.asarray(midline_col, dtype=np.float64)).astype(np.int64)


def shift_columns(volume: np.ndarray, shifts: np.ndarray, fill=0) -> np.ndarray:
    """out[s, :, c] = volume[s, :, c - shifts[s]], ``fill`` where that column is outside: (S, H, W)."""
    n_slices, height, width = volume.shape
    source = np.arange(width)[None, :] - shifts[:, None]
    inside = (source >= 0) & (source < width)
    index = np.broadcast_to(np.clip(source, 0, width - 1)[:, None, :], volume.shape)
    shifted = np.take_along_axis(volume, index, axis=2)
    return np.where(inside[:, None, :], shifted, np.asarray(fill, dtype=volume.dtype))


def split_hemispheres(volume: np.ndarray, midline_col: np.ndarray | None = None, fill=0) -> np.ndarray:
    """(S, H, W) -> (2, S, H, W // 2) = [right, left] halves, the left one flipped (module docstring).

    midline_col: (S,) fractional midline column per slice in ``volume``'s columns;
        None = the image centre.
    Works for images and masks alike (dtype kept). W must be even.
    """
    n_slices, _, width = volume.shape
    if width % 2:
        raise ValueError(f"hemisphere split needs an even width, got {width}")
    if midline_col is None:
        midline_col = centre_columns(n_slices, width)
    if np.shape(midline_col) != (n_slices,):
        raise ValueError(f"midline_col must have shape ({n_slices},), got {np.shape(midline_col)}")
    centred = shift_columns(volume, midline_shifts(midline_col, width), fill=fill)
    half = width // 2
    return np.stack([centred[..., :half], centred[..., half:][..., ::-1]])
