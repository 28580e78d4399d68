"""Scores of anomaly maps and Table 6.1 of thesis 003 (Dif-fuse).

Segmentation (BraTS-like and WMH-like test slices): each anomaly map (N, H, W) in [0, 1] is binarised at
a threshold ``map > threshold`` and compared with the lesion mask by per-slice Dice and IoU
(:mod:`cfbrain.metrics.segmentation`), averaged over the slices that show a lesion (a healthy slice has
no lesion to delineate; its false positives are what the healthy-input check measures). Pixels of the
``ignore`` mask (WMH label 2, "other pathology") count in neither the prediction nor the truth, as in the
WMH challenge. Two thresholds: the one with the best mean Dice on the validation slices (the reported
value) and, labelled as such, the best one on the test slices themselves (what several peers report).

Realism on CT: KID (:func:`cfbrain.metrics.generative.kernel_distance`, torchmetrics) between features of
the healthy counterfactuals of positive test scans and of real negative test slices; the features come
from Inception v3 when weights are configured, otherwise from the in-domain extractor of
:func:`cfbrain.models.features.feature_extractor` (say which in the table).

Table 6.1: one row per method, columns BraTS Dice/IoU, WMH Dice/IoU and CT KID, mean ± standard error
over seeds (:func:`cfbrain.metrics.classification.seeds_markdown_table`).
"""
from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from torch import nn
from torchmetrics.image.fid import NoTrainInceptionV3

from cfbrain.metrics.classification import seeds_markdown_table
from cfbrain.metrics.generative import extract_features, kernel_distance
from cfbrain.metrics.segmentation import dice, iou
from cfbrain.models.features import feature_extractor

THRESHOLDS = tuple(np.round(np.arange(0.02, 1.0, 0.02), 2))
"""The binarisation thresholds searched (anomaly maps are max-normalised to [0, 1])."""
TABLE_COLUMNS = {"brats_dice": "BraTS Dice ↑", "brats_iou": "BraTS IoU ↑", "wmh_dice": "WMH Dice ↑",
                 "wmh_iou": "WMH IoU ↑", "ct_kid": "CT KID ↓",
                 "brats_dice_best_on_test": "BraTS Dice, best-on-test threshold",
                 "brats_iou_best_on_test": "BraTS IoU, best-on-test threshold",
                 "wmh_dice_best_on_test": "WMH Dice, best-on-test threshold",
                 "wmh_iou_best_on_test": "WMH IoU, best-on-test threshold"}
SCORE_COLUMNS = {"brats": ("dice", "iou", "dice_best_on_test", "iou_best_on_test"),
                 "wmh": ("dice", "iou", "dice_best_on_test", "iou_best_on_test"), "ct": ("kid",)}
"""Per dataset role, the per-seed score columns that enter Table 6.1 (as ``{role}_{column}``)."""


def lesion_scores(maps: np.ndarray, lesion_mask: np.ndarray, threshold: float,
                  ignore_mask: np.ndarray | None = None) -> dict[str, float]:
    """Mean Dice and IoU of ``maps > threshold`` over the slices with a lesion (module docstring)."""
    maps, truth = np.asarray(maps), np.asarray(lesion_mask) > 0
    keep = ~(np.asarray(ignore_mask) > 0) if ignore_mask is not None else np.ones_like(truth)
    lesioned = truth.reshape(len(truth), -1).any(axis=1)
    if not lesioned.any():
        return {"dice": float("nan"), "iou": float("nan")}
    predicted = (maps > threshold) & keep
    truth = truth & keep
    return {"dice": float(dice(predicted[lesioned], truth[lesioned]).mean()),
            "iou": float(iou(predicted[lesioned], truth[lesioned]).mean())}


def threshold_curve(maps: np.ndarray, lesion_mask: np.ndarray, ignore_mask: np.ndarray | None = None,
                    thresholds: Sequence[float] = THRESHOLDS) -> pd.DataFrame:
    """Columns threshold, dice, iou: :func:`lesion_scores` at each threshold."""
    return pd.DataFrame([{"threshold": float(t), **lesion_scores(maps, lesion_mask, t, ignore_mask)}
                         for t in thresholds])


def best_threshold(curve: pd.DataFrame) -> float:
    """The threshold of the highest mean Dice (the lowest such threshold on ties)."""
    return float(curve.loc[curve["dice"].idxmax(), "threshold"])


def segmentation_scores(val_maps: np.ndarray, val_masks: np.ndarray, test_maps: np.ndarray, test_masks: np.ndarray,
                        val_ignore: np.ndarray | None = None, test_ignore: np.ndarray | None = None,
                        thresholds: Sequence[float] = THRESHOLDS) -> dict[str, float]:
    """``dice``, ``iou`` at the validation threshold ``threshold``; ``dice_best_on_test``, ``iou_best_on_test``
    at the test set's own best threshold ``threshold_best_on_test``."""
    chosen = best_threshold(threshold_curve(val_maps, val_masks, val_ignore, thresholds))
    test_curve = threshold_curve(test_maps, test_masks, test_ignore, thresholds)
    best = best_threshold(test_curve)
    at_chosen = lesion_scores(test_maps, test_masks, chosen, test_ignore)
    at_best = test_curve.set_index("threshold").loc[best]
    return {"threshold": chosen, "dice": at_chosen["dice"], "iou": at_chosen["iou"],
            "threshold_best_on_test": best, "dice_best_on_test": float(at_best["dice"]),
            "iou_best_on_test": float(at_best["iou"])}


def mean_anomaly(maps: np.ndarray, brain_mask: np.ndarray | None = None) -> np.ndarray:
    """(N,) mean anomaly of each map (inside the brain when a mask is given): the healthy-input check
    (Figure 6.5; near 0 when Dif-fuse acts as the identity)."""
    maps = np.asarray(maps, np.float64)
    if brain_mask is None:
        return maps.reshape(len(maps), -1).mean(axis=1)
    inside = np.asarray(brain_mask) > 0
    return np.array([m[b].mean() if b.any() else 0.0 for m, b in zip(maps, inside)])


def table_frame(scores: Mapping[str, pd.DataFrame]) -> pd.DataFrame:
    """One row per (method, seed) with Table 6.1's columns from each role's per-seed scores (role "brats",
    "wmh" or "ct" -> rows with method, seed and the :data:`SCORE_COLUMNS` of that role)."""
    frames = [table[["method", "seed", *SCORE_COLUMNS[role]]].rename(
        columns={c: f"{role}_{c}" for c in SCORE_COLUMNS[role]}).set_index(["method", "seed"])
        for role, table in scores.items()]
    return pd.concat(frames, axis=1).reset_index()


def anomaly_table(per_seed: pd.DataFrame, method_labels: dict[str, str] | None = None) -> str:
    """Table 6.1 in markdown: ``per_seed`` has one row per (method, seed) and any of the columns of
    :data:`TABLE_COLUMNS` (fractions for Dice/IoU, the KID value); mean ± standard error over seeds,
    three decimals as in the thesis."""
    columns = [c for c in TABLE_COLUMNS if c in per_seed.columns]
    frame = per_seed.assign(method=per_seed["method"].map(lambda m: (method_labels or {}).get(m, m)))
    return seeds_markdown_table(frame, "method", columns, labels={"method": "Method", **TABLE_COLUMNS},
                                percent=False, decimals=3)


class InceptionFeatures(nn.Module):
    """Inception v3 pool features (2048-d, torchmetrics' ``NoTrainInceptionV3``, the FID network) from a
    local weights file (``pt_inception-2015-12-05`` of torch-fidelity; nothing is downloaded): (N, 1, H, W)
    images in [0, 1] -> (N, 2048), the grey image repeated to 3 channels and scaled to 0-255 uint8."""

    def __init__(self, weights: str | Path) -> None:
        super().__init__()
        self.inception = NoTrainInceptionV3(name="inception-v3-compat", features_list=["2048"],
                                            feature_extractor_weights_path=str(weights))

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        pixels = (images.clamp(0, 1) * 255).round().to(torch.uint8).repeat(1, 3, 1, 1)
        return self.inception(pixels)


def kid_features(inception_weights: str | Path | None, autoencoder_weights: str | Path | None,
                 device: str | torch.device = "cpu") -> tuple[nn.Module, str]:
    """The KID feature extractor and its label: Inception v3 when its weights are configured, otherwise
    the in-domain autoencoder the MedEdit track trains (:func:`cfbrain.models.features.feature_extractor`)."""
    if inception_weights:
        return InceptionFeatures(inception_weights).to(device).eval(), f"Inception v3 ({Path(inception_weights).name})"
    return (feature_extractor(autoencoder_weights=autoencoder_weights, device=device),
            "in-domain autoencoder trained by the pipeline (no Inception v3 weights configured)")


def ct_kid(extractor: nn.Module, real: np.ndarray, generated: np.ndarray, *, seed: int = 0) -> float:
    """KID (torchmetrics, mean over subsets) between real negative slices and healthy counterfactuals,
    each (N, H, W) or (N, 1, H, W) in [0, 1]."""
    real_features, fake_features = extract_features(extractor, real), extract_features(extractor, generated)
    return kernel_distance(real_features, fake_features, seed=seed)[0]
