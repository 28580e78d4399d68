"""Stroke classification experiment (thesis 003 chapter 4): datasets, training, prediction, tables.

Tensors come from the preprocessing stage (``preproc/{scan}/tensor.npz``, [0, 1]); labels are the
pseudonymised labels table (patient, study, lesion, side, ...). Four classes in ``FOUR_CLASSES``
order: none, left, right, both.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from torch.utils.data import Dataset

from cfbrain.metrics.classification import (FOUR_CLASSES, classification_summary, confusion_frame,
                                            format_markdown, infarct_size_stratum, seeds_markdown_table,
                                            stratified_accuracy)
from cfbrain.models import MultiTaskHemisphereCNN, build_peer
from cfbrain.preprocess.ct import load_tensor
from cfbrain.settings import from_mapping
from cfbrain.train.augment import RandomBrainFlip
from cfbrain.train.checkpoint import load_weights
from cfbrain.train.classification import PHASE_LRS, mtl_outputs, mtl_phases, peer_outputs, peer_phase
from cfbrain.train.config import Phase, TrainConfig
from cfbrain.train.data import SeededTransformDataset
from cfbrain.train.inference import predict
from cfbrain.train.loop import fit
from cfbrain.train.runtime import seed_everything

log = logging.getLogger(__name__)
HEMISPHERE_MODELS = ("mtl",)
TENSOR = "tensor.npz"


def four_class_labels(labels: pd.DataFrame) -> pd.DataFrame:
    """labels (patient, study, lesion, side, ...) -> the same rows plus ``label`` (0..3, FOUR_CLASSES)."""
    side = labels.side.fillna("none").astype(str).str.lower()
    label = np.where(labels.lesion.astype(int) == 0, "none", side)
    unknown = sorted(set(label) - set(FOUR_CLASSES))
    if unknown:
        raise ValueError(f"labels: side values {unknown} for lesion scans; expected left/right/both")
    return labels.assign(label=[FOUR_CLASSES.index(v) for v in label])


def scan_table(split: pd.DataFrame, labels: pd.DataFrame) -> pd.DataFrame:
    """One row per scan of a split table (scan, patient, study, split) with its labels; raises if a
    scan has no label row (a silently unlabelled scan would bias every table)."""
    merged = split.drop(columns=[c for c in ("lesion",) if c in split]).merge(
        four_class_labels(labels), on=["patient", "study"], how="left")
    missing = merged[merged.label.isna()].scan.tolist()
    if missing:
        raise ValueError(f"{len(missing)} scans have no labels row, e.g. {missing[:3]}")
    return merged.assign(label=merged.label.astype(int))


class ScanTensors(Dataset):
    """Preprocessed scans as training samples: {"image": float32 tensor, "label": int64 scalar}.

    ``layout`` "hemispheres" gives (2, S, H, W/2) [right, left-mirrored] for the MTL CNN,
    "full" gives (S, H, W) for the full-brain peers.
    """

    def __init__(self, tensor_files: list[Path], labels: list[int], layout: str):
        if len(tensor_files) != len(labels):
            raise ValueError("one label per tensor file")
        self.files, self.labels, self.layout = list(tensor_files), list(labels), layout

    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        tensor = load_tensor(self.files[index])
        image = tensor.hemispheres() if self.layout == "hemispheres" else tensor.image
        return {"image": torch.from_numpy(np.ascontiguousarray(image, dtype=np.float32)),
                "label": torch.tensor(self.labels[index], dtype=torch.int64)}


@dataclass(frozen=True)
class ClassifierSettings:
    """Training settings of the classification config section (thesis: 200 epochs in all).

    ``mtl_lrs`` are the initial learning rates of the three MTL phases (half-brain, heads, fine-tune);
    the thesis's (Table 4.1) are the default. A run with a hundredth of the thesis's optimizer steps
    (the demo) needs larger ones for the heads to move at all.
    """

    mtl_epochs: tuple[int, int, int] = (80, 40, 80)
    mtl_lrs: tuple[float, float, float] = PHASE_LRS
    peer_epochs: int = 200
    peer_lr: float = 1e-4
    batch_size: int = 8
    weight_decay: float = 5e-5
    min_lr: float = 1e-7
    checkpoint_every: int = 50

    @classmethod
    def from_mapping(cls, values: dict) -> "ClassifierSettings":
        return from_mapping(cls, values, "classification training")


def build_model(name: str, image_hw: tuple[int, int]) -> torch.nn.Module:
    """Model ``name`` for tensors of slice size ``image_hw`` (H, W); the ViT peer is built for that size."""
    return MultiTaskHemisphereCNN() if name in HEMISPHERE_MODELS else build_peer(name, image_hw)


def tensor_hw(scans: pd.DataFrame, tensor_dir: dict[str, Path]) -> tuple[int, int]:
    """Slice size (H, W) of the first training scan's tensor: the size the models are built for."""
    train = scans[scans.split == "train"]
    if train.empty:
        raise ValueError("the training split is empty")
    height, width = load_tensor(Path(tensor_dir[train.scan.iloc[0]]) / TENSOR).image.shape[-2:]
    return int(height), int(width)


def training_phases(name: str, train_labels: list[int], settings: ClassifierSettings) -> list[Phase]:
    """The thesis's three phases for the hemisphere model, one full-brain phase for a peer."""
    if name in HEMISPHERE_MODELS:
        return mtl_phases(train_labels, settings.mtl_epochs, settings.mtl_lrs)
    return [peer_phase(train_labels, settings.peer_epochs, settings.peer_lr)]


def _dataset(table: pd.DataFrame, tensor_dir: dict[str, Path], layout: str) -> ScanTensors:
    return ScanTensors([Path(tensor_dir[s]) / TENSOR for s in table.scan], table.label.tolist(), layout)


def train_classifier(name: str, scans: pd.DataFrame, tensor_dir: dict[str, Path], settings: ClassifierSettings,
                     seed: int, out_dir: Path, checkpoint_dir: Path) -> Path:
    """Train model ``name`` on the train split of ``scans`` (see :func:`scan_table`), validating on val.

    Writes ``out_dir/final.pt``, ``train_log.tsv`` and ``training_curves.png``; resumes from
    ``checkpoint_dir/last.pt`` after a kill. Returns the path of the final weights.
    """
    layout = "hemispheres" if name in HEMISPHERE_MODELS else "full"
    train, val = scans[scans.split == "train"], scans[scans.split == "val"]
    image_hw = tensor_hw(scans, tensor_dir)
    seed_everything(seed)
    model = build_model(name, image_hw)
    phases = training_phases(name, train.label.tolist(), settings)
    config = TrainConfig(batch_size=settings.batch_size, weight_decay=settings.weight_decay,
                         min_lr=settings.min_lr, checkpoint_every=settings.checkpoint_every, seed=seed)
    augmented = SeededTransformDataset(_dataset(train, tensor_dir, layout), RandomBrainFlip(layout=layout), seed)
    fit(model, phases, augmented, _dataset(val, tensor_dir, layout) if len(val) else None, config, out_dir,
        checkpoint_dir=checkpoint_dir)
    return Path(out_dir) / "final.pt"


def predict_classifier(name: str, weights: Path, scans: pd.DataFrame, tensor_dir: dict[str, Path]) -> pd.DataFrame:
    """Test-split predictions: scan, label, pred and the class probabilities."""
    test = scans[scans.split == "test"]
    if test.empty:
        raise ValueError("the test split is empty: more patients or other split fractions are needed")
    model = load_weights(build_model(name, tensor_hw(scans, tensor_dir)), weights)
    layout = "hemispheres" if name in HEMISPHERE_MODELS else "full"
    outputs = predict(model, _dataset(test, tensor_dir, layout), mtl_outputs if name in HEMISPHERE_MODELS
                      else peer_outputs)
    table = test.reset_index(drop=True).assign(pred=outputs["pred"].astype(int))
    for key, value in outputs.items():
        if key in ("label", "pred"):
            continue
        for i in range(1 if value.ndim == 1 else value.shape[1]):
            table[key if value.ndim == 1 else f"{key}_{i}"] = value if value.ndim == 1 else value[:, i]
    return table


SUMMARY_METRICS = ("accuracy", "task1_accuracy", "task1_sensitivity", "task1_specificity", "task2_accuracy",
                   "micro_sensitivity", "micro_specificity")
STRATA = (("infarct size", "size_stratum", None), ("territory", "territory", ","),
          ("number of lesions", "n_lesions", None), ("timepoint", "timepoint", None))


def classification_report(predictions: pd.DataFrame, dataset: str) -> tuple[str, pd.DataFrame]:
    """Markdown tables (Tables 4.2, 4.3, 4.6) and the per-seed metric table from the test predictions
    of every model and seed (columns model, seed, label, pred, and the label-table strata)."""
    per_seed = pd.DataFrame([{"model": model, "seed": seed, "n_test": len(group),
                              **classification_summary(group.label, group.pred)}
                             for (model, seed), group in predictions.groupby(["model", "seed"], sort=True)])
    majority = predictions.groupby(["model", "seed"]).label.apply(lambda y: y.value_counts(normalize=True).max())
    lines = [f"# Stroke classification: {dataset}", "",
             f"Test scans per seed: {int(per_seed.n_test.median())}; seeds: {sorted(int(s) for s in per_seed.seed.unique())}. "
             f"Majority-class rate on the test sets: {100 * majority.mean():.1f} %.", "",
             "## Four-class and task metrics (mean ± standard error over seeds; thesis Table 4.2)", "",
             seeds_markdown_table(per_seed, "model", SUMMARY_METRICS)]
    for model, group in predictions.groupby("model", sort=True):
        lines += ["", f"## Confusion matrix, {model}, all seeds pooled (rows true, columns predicted; Table 4.3)", "",
                  format_markdown(confusion_frame(group.label, group.pred), index=True)]
        group = group.assign(size_stratum=infarct_size_stratum(group["size"]) if "size" in group else None)
        for title, column, sep in STRATA:
            if column not in group or group[column].isna().all():
                continue
            table = stratified_accuracy(group.label, group.pred, group[column].tolist(), sep=sep)
            table["accuracy"] = (100 * table.accuracy).round(1)
            lines += ["", f"### {model}: accuracy by {title} (Table 4.6)", "", format_markdown(table)]
    return "\n".join(lines) + "\n", per_seed


def examples_figure(predictions: pd.DataFrame, tensor_dir: dict[str, Path], path: Path, per_group: int = 4) -> None:
    """Middle slices of correctly and wrongly classified test scans of the first model and seed, with
    true and predicted class (radiological orientation: patient's right on the image's left)."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    first = predictions[(predictions.model == predictions.model.min()) & (predictions.seed == predictions.seed.min())]
    groups = {"correct": first[first.label == first.pred].head(per_group),
              "wrong": first[first.label != first.pred].head(per_group)}
    figure, axes = plt.subplots(2, per_group, figsize=(2.6 * per_group, 6), squeeze=False)
    for row, (title, members) in enumerate(groups.items()):
        for col in range(per_group):
            ax = axes[row, col]
            ax.axis("off")
            if col >= len(members):
                continue
            item = members.iloc[col]
            image = load_tensor(Path(tensor_dir[item.scan]) / TENSOR).image
            ax.imshow(image[image.shape[0] // 2], cmap="gray", vmin=0, vmax=1)
            ax.set_title(f"{title}: true {FOUR_CLASSES[item.label]}, pred {FOUR_CLASSES[item.pred]}\n{item.scan}",
                         fontsize=7, color="green" if title == "correct" else "red")
    figure.suptitle(f"{first.model.iloc[0]}, seed {first.seed.iloc[0]}: test scans (R on the left)")
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)
