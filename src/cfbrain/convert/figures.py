"""Figure of the exclusions table: where the input series went, stage by stage (thesis 003 Table 3.1)."""
from __future__ import annotations

from pathlib import Path

import pandas as pd
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from cfbrain.convert.exclusions import REASON_LABELS

STAGE_ORDER = ("index", "convert", "review", "registration", "registration_qc", "preprocess", "preprocess_qc")
STATUS_COLOURS = {"kept": "#2e7d32", "needs_review": "#f9a825", "excluded": "#c62828"}


def exclusion_bars(table: pd.DataFrame) -> pd.DataFrame:
    """Series rows of ``qc/exclusions.tsv`` -> one bar per (status, stage, reason): columns status, stage,
    label, n; kept first, then awaiting review, then exclusions in stage order (largest first within a stage)."""
    series = table[table.unit == "series"]
    bars = series.groupby(["status", "stage", "reason"]).size().rename("n").reset_index()
    bars["label"] = [("kept (all stages passed)" if status == "kept" else
                      f"{stage}: {REASON_LABELS.get(reason, reason)}")
                     for status, stage, reason in zip(bars.status, bars.stage, bars.reason)]
    status_rank = bars.status.map({"kept": 0, "needs_review": 1, "excluded": 2}).fillna(3)
    stage_rank = bars.stage.map({s: i for i, s in enumerate(STAGE_ORDER)}).fillna(len(STAGE_ORDER))
    order = pd.DataFrame({"status": status_rank, "stage": stage_rank, "n": -bars.n}).sort_values(
        ["status", "stage", "n"], kind="stable").index
    return bars.loc[order, ["status", "stage", "label", "n"]].reset_index(drop=True)


def exclusions_figure(table: pd.DataFrame, dataset: str, path: str | Path) -> Path:
    """Horizontal bars of series counts per outcome (see :func:`exclusion_bars`), coloured by status,
    with the input total in the title; written as PNG to ``path``."""
    bars = exclusion_bars(table)
    figure = Figure(figsize=(8, 0.45 * len(bars) + 1.4))
    FigureCanvasAgg(figure)
    ax = figure.add_subplot()
    positions = range(len(bars))[::-1]
    ax.barh(list(positions), bars.n, color=[STATUS_COLOURS.get(s, "grey") for s in bars.status])
    ax.set_yticks(list(positions), bars.label, fontsize=8)
    for y, n in zip(positions, bars.n):
        ax.text(n, y, f" {n}", va="center", fontsize=8)
    ax.set_xlabel("series")
    if bars.empty:
        ax.text(0.5, 0.5, "no DICOM file in the source folder", transform=ax.transAxes, ha="center", va="center")
    else:
        ax.set_xlim(0, bars.n.max() * 1.15)
    ax.set_title(f"{dataset}: {int(bars.n.sum())} input series (green kept, amber awaiting review, red excluded)",
                 fontsize=9)
    figure.tight_layout()
    figure.savefig(path, dpi=120)
    return Path(path)
