"""The per-epoch training log (``train_log.tsv``) and its figure (``training_curves.png``)."""
from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import pandas as pd

LEADING_COLUMNS = ("phase", "epoch", "step", "lr", "train_loss", "val_loss")
"""phase name; epoch within the phase (from 1); optimizer steps so far over all phases; mean learning
rate over the epoch's steps; mean training loss over the epoch's samples; mean validation loss (NA
without a validation set). Then ``train_<metric>`` and ``val_<metric>`` columns, means over samples."""


def history_frame(rows: Sequence[dict]) -> pd.DataFrame:
    """Rows -> DataFrame with ``LEADING_COLUMNS`` first, then metric columns in order of appearance;
    a metric missing from a phase is NaN."""
    frame = pd.DataFrame(list(rows))
    metrics = [c for c in frame.columns if c not in LEADING_COLUMNS]
    return frame.reindex(columns=[*LEADING_COLUMNS, *metrics])


def write_history(rows: Sequence[dict], path: Path) -> Path:
    """Rewrite the whole TSV atomically (it is small, and columns may grow when a phase adds metrics)."""
    path = Path(path)
    temporary = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    history_frame(rows).to_csv(temporary, sep="\t", index=False, float_format="%.6g", na_rep="NA")
    os.replace(temporary, path)
    return path


def plot_history(history: pd.DataFrame, path: Path) -> Path:
    """Loss, learning rate and validation metrics against the optimizer step; dotted lines end phases.

    Drawn on a bare Agg figure, so no pyplot backend or global matplotlib state is touched.
    """
    from matplotlib.figure import Figure

    metrics = [c for c in history.columns if c.startswith("val_") and c != "val_loss"
               and history[c].notna().any()]
    fig = Figure(figsize=(13 if metrics else 9, 3.6), layout="tight")
    axes = fig.subplots(1, 3 if metrics else 2)
    for color, column in zip(("C0", "C1"), ("train_loss", "val_loss")):
        label = column.replace("_", " ")
        for _, rows in history.groupby("phase", sort=False):
            if rows[column].notna().any():  # one line per phase: phases may optimize different losses
                axes[0].plot(rows["step"], rows[column], marker=".", color=color, label=label)
                label = None
    losses = history[["train_loss", "val_loss"]].stack()
    # diffusion and segmentation losses fall by orders of magnitude: a linear axis hides everything after the drop
    axes[0].set(title="loss", xlabel="optimizer step", yscale="log" if (losses > 0).all() else "linear")
    axes[0].legend(fontsize="small")
    axes[1].plot(history["step"], history["lr"], marker=".")
    axes[1].set(title="learning rate", xlabel="optimizer step",
                yscale="log" if (history["lr"] > 0).all() else "linear")
    for column in metrics:
        axes[2].plot(history["step"], history[column], marker=".", label=column)
    if metrics:
        axes[2].set(title="validation metrics", xlabel="optimizer step")
        axes[2].legend(fontsize="small")
    phase_ends = history.groupby("phase", sort=False)["step"].max().iloc[:-1]
    for ax in axes:
        for step in phase_ends:
            ax.axvline(step, color="grey", linestyle=":", linewidth=0.8)
        ax.grid(alpha=0.3)
    if history["phase"].nunique() > 1:
        axes[0].set_title("loss (phases: " + ", ".join(map(str, history["phase"].unique())) + ")")
    path = Path(path)
    fig.savefig(path, dpi=100)
    return path
