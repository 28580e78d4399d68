"""Figures of thesis 003 chapter 6 (PNG, matplotlib).

- :func:`counterfactual_figure`: per slice (row) the input, then each method's counterfactual and anomaly
  map, then the true lesion mask (Figures 6.2 and 6.4); with healthy inputs and no truth it is Figure 6.5,
  with one Dif-fuse run per K as the "methods" it is Figure 6.7.
- :func:`grid_heatmap`: validation Dice over saliency percentile x K (Figure 6.6).

Images (N, C, H, W) in [0, 1]; one channel (``channel``) is shown; maps and masks (N, H, W).
"""
from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import numpy as np
import pandas as pd

from cfbrain.anomaly.methods import AnomalyResult


def _pyplot():
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    return plt


def counterfactual_figure(images: np.ndarray, results: Mapping[str, AnomalyResult], path: Path,
                          truth: np.ndarray | None = None, channel: int = 0, title: str = "") -> Path:
    """Input | (counterfactual, anomaly map) per entry of ``results`` | truth (module docstring)."""
    plt = _pyplot()
    columns = 1 + 2 * len(results) + (truth is not None)
    rows = len(images)
    figure, axes = plt.subplots(rows, columns, figsize=(1.6 * columns, 1.6 * rows + 0.4), squeeze=False)
    for row in range(rows):
        panels = [("input", images[row, channel], "gray")]
        for name, result in results.items():
            panels += [(f"{name}\ncounterfactual", result.counterfactual[row, channel], "gray"),
                       (f"{name}\nanomaly map", result.anomaly_map[row], "hot")]
        if truth is not None:
            panels.append(("truth", truth[row], "gray"))
        for axis, (label, image, cmap) in zip(axes[row], panels):
            axis.imshow(image, cmap=cmap, vmin=0, vmax=1)
            axis.set_xticks([])
            axis.set_yticks([])
            if row == 0:
                axis.set_title(label, fontsize=7)
    if title:
        figure.suptitle(title, fontsize=9)
    figure.tight_layout()
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=120)
    plt.close(figure)
    return Path(path)


def grid_heatmap(grid: pd.DataFrame, path: Path, value: str = "dice") -> Path:
    """Heat map of ``value`` with saliency percentile (rows) against K (columns); ``grid`` has columns
    ``percentile``, ``inversion_depth`` and ``value``; the best cell is outlined."""
    plt = _pyplot()
    table = grid.pivot(index="percentile", columns="inversion_depth", values=value).sort_index()
    figure, axis = plt.subplots(figsize=(1.2 * table.shape[1] + 2, 0.8 * table.shape[0] + 1.2))
    shown = axis.imshow(table.to_numpy(), cmap="viridis", aspect="auto")
    axis.set_xticks(range(table.shape[1]), [str(k) for k in table.columns])
    axis.set_yticks(range(table.shape[0]), [f"{p:g}" for p in table.index])
    axis.set_xlabel("K (noising steps)")
    axis.set_ylabel("saliency percentile τ")
    for (i, j), v in np.ndenumerate(table.to_numpy()):
        axis.text(j, i, f"{v:.3f}", ha="center", va="center", fontsize=7, color="white")
    best_row, best_col = np.unravel_index(np.nanargmax(table.to_numpy()), table.shape)
    axis.add_patch(plt.Rectangle((best_col - 0.5, best_row - 0.5), 1, 1, fill=False, edgecolor="red", linewidth=2))
    figure.colorbar(shown, ax=axis, label=f"validation {value}")
    figure.tight_layout()
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=120)
    plt.close(figure)
    return Path(path)
