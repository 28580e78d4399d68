"""Preprocessing QC montage: what a scan looked like, what the network will see (matplotlib, Agg, no pyplot)."""
from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from cfbrain.preprocess.ct import CTTensor, load_tensor
from cfbrain.preprocess.intensity import hu_to_unit
from cfbrain.preprocess.volume import load_ct

BRAIN_COLOUR, LESION_COLOUR, MIDLINE_COLOUR = "#00d5ff", "#ff3030", "#ffd000"


def _raw_panel(ax, hu_plane: np.ndarray, voxel_mm, tensor: CTTensor, hu_window) -> None:
    ax.imshow(hu_to_unit(hu_plane, *hu_window), cmap="gray", vmin=0, vmax=1,
              aspect=voxel_mm[1] / voxel_mm[2], interpolation="nearest")
    row0, row1, col0, col1 = tensor.crop_box.as_array()
    ax.plot([col0 - 0.5, col1 - 0.5, col1 - 0.5, col0 - 0.5, col0 - 0.5],
            [row0 - 0.5, row0 - 0.5, row1 - 0.5, row1 - 0.5, row0 - 0.5], color=MIDLINE_COLOUR, lw=0.8)
    for x, side in ((0.02, "R"), (0.95, "L")):
        ax.text(x, 0.5, side, transform=ax.transAxes, color=MIDLINE_COLOUR, fontsize=9, va="center")


def _tensor_panel(ax, tensor: CTTensor, s: int) -> None:
    ax.imshow(tensor.image[s], cmap="gray", vmin=0, vmax=1, aspect=tensor.pixel_mm[0] / tensor.pixel_mm[1],
              interpolation="nearest")
    ax.contour(tensor.brain_mask[s], levels=[0.5], colors=BRAIN_COLOUR, linewidths=0.7)
    if tensor.lesion_mask is not None and tensor.lesion_mask[s].any():
        ax.contour(tensor.lesion_mask[s], levels=[0.5], colors=LESION_COLOUR, linewidths=0.9)
    ax.axvline(tensor.midline_col[s], color=MIDLINE_COLOUR, lw=0.7, ls="--")


def _halves_panel(ax, tensor: CTTensor, s: int) -> None:
    halves = tensor.hemispheres()[:, s]
    ax.imshow(np.concatenate([halves[0], np.full((halves.shape[1], 4), 1.0), halves[1]], axis=1),
              cmap="gray", vmin=0, vmax=1, aspect=tensor.pixel_mm[0] / tensor.pixel_mm[1], interpolation="nearest")


def preprocessing_montage(path: str | Path, scans: Sequence[tuple[str, str | Path, str | Path]],
                          hu_window: tuple[float, float] = (0.0, 100.0)) -> None:
    """One row per scan: raw slice (windowed, crop box), tensor slice (+ outlines, midline), the two halves.

    scans: (pseudonymous name, CT NIfTI, preprocessed .npz) per row; the slice
    shown is the tensor's middle slice and the raw slice it came from.
    Writes a PNG (or whatever ``path``'s suffix says) at 110 dpi.
    """
    if not scans:
        figure = Figure(figsize=(6.0, 1.5))
        FigureCanvasAgg(figure)
        figure.text(0.5, 0.5, "no scan passed preprocessing: see qc/exclusions.tsv", ha="center", va="center")
        figure.savefig(path, dpi=110)
        return
    figure = Figure(figsize=(11.0, 3.4 * len(scans)), layout="constrained")
    FigureCanvasAgg(figure)
    axes = np.atleast_2d(figure.subplots(len(scans), 3, squeeze=False))
    for row, (name, nifti, npz) in zip(axes, scans):
        tensor, ct = load_tensor(npz), load_ct(nifti)
        s = tensor.image.shape[0] // 2
        _raw_panel(row[0], ct.data[tensor.slice_index[s]], ct.voxel_mm, tensor, hu_window)
        row[0].set_title(f"{name}: raw slice {tensor.slice_index[s]} of {ct.shape[0]}, {ct.shape[1]}x{ct.shape[2]}",
                         fontsize=8)
        _tensor_panel(row[1], tensor, s)
        row[1].set_title(f"tensor {s} of {tensor.image.shape[0]}, {tensor.image.shape[1]}x{tensor.image.shape[2]}"
                         f" (brain, lesion, midline: {tensor.midline_source})", fontsize=8)
        _halves_panel(row[2], tensor, s)
        row[2].set_title("hemispheres: right | left (flipped)", fontsize=8)
        for ax in row:
            ax.set_axis_off()
    figure.savefig(path, dpi=110)
