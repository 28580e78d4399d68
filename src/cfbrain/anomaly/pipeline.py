"""Chapter 6 as workflow stages: slices of a dataset source, splits with the CT scan labels, the evaluation
slices, run files and per-seed scores (the workflow's scripts call these; thesis 003 §6.6).

Sources (``kind``): ``brats2021`` and ``wmh`` (the challenges' layouts), ``synthetic_mri`` (the tumour
subjects of a multi-contrast synthetic cohort, BraTS's role) and ``synthetic_wmh`` (the WMH subjects of such a
cohort). WMH slices are reconciled to the BraTS channels (:func:`cfbrain.preprocess.mri.reconcile_contrasts`):
the models trained on BraTS see them out of domain, and anomaly maps average the measured channels only.

Splits (one row per subject): ``subject``, ``split``, ``positive`` (1: every slice of the subject counts as
lesioned: a CT scan labelled positive, whose lesion is not delineated). A slice is *lesioned* when its mask
shows a lesion or its subject is positive; healthy training slices are the training split's others.

Evaluation slices (:func:`evaluation_slices`): ``val_lesion`` (thresholds and the K x percentile grid),
``test_lesion`` (Dice/IoU on MRI; the counterfactuals of positive scans on CT) and ``test_healthy``
(Figure 6.5's mean anomaly; the real negatives of CT's KID), each at most ``max_slices`` evenly spaced.
"""
from __future__ import annotations

from collections.abc import Mapping
from dataclasses import replace
from pathlib import Path

import numpy as np
import pandas as pd

from cfbrain.anomaly.data import slice_splits
from cfbrain.anomaly.methods import AnomalyResult
from cfbrain.errors import require_rows
from cfbrain.preprocess.npz import read_npz, write_npz
from cfbrain.metrics.anomaly import mean_anomaly, segmentation_scores
from cfbrain.preprocess.mri import (BRATS2021_VOLUME_SPEC, WMH_VOLUME_SPEC, VolumeSliceSet, find_brats2021_cases,
                                    find_wmh_cases, process_volume_dataset, reconcile_contrasts)
from cfbrain.settings import from_mapping
from cfbrain.synth.mri import WMH_DATASET, find_synthetic_cases, volume_slice_spec
from cfbrain.train import TrainConfig

GROUPS = ("val_lesion", "test_lesion", "test_healthy")
WMH_KINDS = ("wmh", "synthetic_wmh")
RUN_FORMAT = "cfbrain-anomaly-run/1"


def source_slices(kind: str, root: str | Path, size: int, synthetic_drop_slices: int
                  ) -> tuple[VolumeSliceSet, pd.DataFrame]:
    """Slices (four BraTS channels) and the per-case status table of an MRI source (module docstring)."""
    if kind == "brats2021":
        cases, spec = find_brats2021_cases(root), replace(BRATS2021_VOLUME_SPEC, size=size)
    elif kind == "wmh":
        cases, spec = find_wmh_cases(root), replace(WMH_VOLUME_SPEC, size=size)
    elif kind in ("synthetic_mri", "synthetic_wmh"):
        dataset = WMH_DATASET if kind == "synthetic_wmh" else "tumour"
        cases, spec = find_synthetic_cases(root, dataset), volume_slice_spec(dataset, size, synthetic_drop_slices)
    else:
        raise ValueError(f"no chapter-6 slices for source kind {kind!r}")
    slices, table = process_volume_dataset(cases, spec)
    return (reconcile_contrasts(slices) if kind in WMH_KINDS else slices), table


def anomaly_splits(slices: VolumeSliceSet, seed: int, fractions: tuple[float, float, float],
                   ct_split: pd.DataFrame | None = None) -> pd.DataFrame:
    """Columns subject, split, positive: MRI subjects split 70/15/15 (:func:`slice_splits`); CT scans take
    the CT dataset's split of the same seed (columns scan, split, lesion) and their label as ``positive``."""
    if ct_split is None:
        return slice_splits(slices, seed, fractions).assign(positive=0)
    return pd.DataFrame({"subject": ct_split["scan"], "split": ct_split["split"],
                         "positive": ct_split["lesion"].astype(int)}).sort_values("subject", ignore_index=True)


def lesioned(slices: VolumeSliceSet, splits: pd.DataFrame) -> np.ndarray:
    """(N,) bool: the slice shows a lesion or belongs to a positive subject (module docstring)."""
    positive = set(splits.loc[splits["positive"] == 1, "subject"])
    return slices.lesion | np.isin(slices.subject, list(positive))


def split_mask(slices: VolumeSliceSet, splits: pd.DataFrame, split: str) -> np.ndarray:
    return np.isin(slices.subject, list(splits.loc[splits["split"] == split, "subject"]))


def healthy_slices(slices: VolumeSliceSet, splits: pd.DataFrame, split: str) -> VolumeSliceSet:
    """The slices of ``split`` that are not lesioned: the healthy DDPM's training (and validation) data."""
    return slices.select(split_mask(slices, splits, split) & ~lesioned(slices, splits))


def evaluation_slices(slices: VolumeSliceSet, splits: pd.DataFrame, max_slices: int | None) -> pd.DataFrame:
    """Columns index (into ``slices``), group (:data:`GROUPS`): each group's slices, at most ``max_slices``
    evenly spaced ones (None: all), in slice order."""
    sick = lesioned(slices, splits)
    members = {"val_lesion": split_mask(slices, splits, "val") & sick,
               "test_lesion": split_mask(slices, splits, "test") & sick,
               "test_healthy": split_mask(slices, splits, "test") & ~sick}
    frames = []
    for group in GROUPS:
        index = np.flatnonzero(members[group])
        if max_slices is not None and len(index) > max_slices:
            index = index[np.unique(np.linspace(0, len(index) - 1, max_slices).round().astype(int))]
        frames.append(pd.DataFrame({"index": index, "group": group}))
    return pd.concat(frames, ignore_index=True)


def save_run(path: str | Path, index: np.ndarray, result: AnomalyResult, inversion_depth: int,
             percentile: float) -> None:
    """One method's counterfactuals (float16) and anomaly maps of the slices ``index``, with K and τ used."""
    write_npz(path, {"format": np.str_(RUN_FORMAT), "index": np.asarray(index, np.int64),
                     "counterfactual": result.counterfactual.astype(np.float16),
                     "anomaly_map": result.anomaly_map.astype(np.float16), "evaluations": np.int64(result.evaluations),
                     "inversion_depth": np.int64(inversion_depth), "percentile": np.float64(percentile)})


def load_run(path: str | Path) -> tuple[np.ndarray, AnomalyResult]:
    """(index, result) of a file written by :func:`save_run`."""
    a = read_npz(path, RUN_FORMAT)
    return a["index"], AnomalyResult(a["counterfactual"].astype(np.float32), a["anomaly_map"].astype(np.float32),
                                     int(a["evaluations"]))


def group_rows(index: np.ndarray, evaluation: pd.DataFrame, group: str) -> np.ndarray:
    """Positions in a run's ``index`` of the evaluation group's slices."""
    wanted = set(evaluation.loc[evaluation["group"] == group, "index"])
    return np.flatnonzero(np.isin(index, list(wanted)))


def segmentation_row(slices: VolumeSliceSet, evaluation: pd.DataFrame, index: np.ndarray,
                     result: AnomalyResult) -> dict[str, float]:
    """Dice/IoU at the validation threshold and best-on-test, and the healthy test slices' mean anomaly
    inside the brain (the healthy-input check, Figure 6.5) of one MRI run."""
    val, test, healthy = (group_rows(index, evaluation, g) for g in GROUPS)
    maps, picked = result.anomaly_map, slices.select(index)
    scores = segmentation_scores(maps[val], picked.lesion_mask[val], maps[test], picked.lesion_mask[test],
                                 picked.ignore_mask[val], picked.ignore_mask[test])
    healthy_anomaly = mean_anomaly(maps[healthy], picked.brain_mask[healthy])
    return {**scores, "healthy_mean_anomaly": float(healthy_anomaly.mean()) if len(healthy) else float("nan"),
            "n_val": len(val), "n_test": len(test), "n_healthy": len(healthy)}


def grid_choice(grid: pd.DataFrame) -> tuple[int, float]:
    """(K, percentile) of the grid's best validation Dice (the first such cell on ties)."""
    best = grid.loc[grid["dice"].idxmax()]
    return int(best["inversion_depth"]), float(best["percentile"])


MAPS_FORMAT = "cfbrain-anomaly-saliency/1"


def save_maps(path: str | Path, index: np.ndarray, maps: np.ndarray) -> None:
    """Saliency maps (N, H, W) in [0, 1] of the slices ``index`` (the evaluation slices)."""
    write_npz(path, {"format": np.str_(MAPS_FORMAT), "index": np.asarray(index, np.int64),
                     "maps": np.asarray(maps, np.float16)})


def load_maps(path: str | Path) -> tuple[np.ndarray, np.ndarray]:
    """(index, maps float32) of a file written by :func:`save_maps`."""
    a = read_npz(path, MAPS_FORMAT)
    return a["index"], a["maps"].astype(np.float32)


def training_slices(slices: VolumeSliceSet, splits: pd.DataFrame, dataset: str, seed: int | str,
                    healthy: bool = False) -> VolumeSliceSet:
    """The training split's slices (only the healthy ones with ``healthy``), or :class:`InsufficientData`."""
    train = healthy_slices(slices, splits, "train") if healthy else slices.select(split_mask(slices, splits, "train"))
    require_rows(len(train.scan), 1, dataset, f"{'healthy ' * healthy}slices in the training split of seed {seed} "
                                              f"(qc/anomaly_slices.tsv)")
    return train


def seeded_train_config(values: Mapping, seed: int, what: str) -> TrainConfig:
    """:class:`TrainConfig` from a config section, with the job's seed."""
    return from_mapping(TrainConfig, {**values, "seed": seed}, what)
