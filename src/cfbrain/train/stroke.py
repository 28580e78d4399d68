"""Stroke classification experiment (thesis 003 chapter 4): datasets, training, prediction, tables.

Tensors come from the preprocessing stage (``preproc/{scan}/tensor.npz``, [0, 1]); labels are the
pseudonymised labels table (patient, study, lesion, side, ...). Four classes in ``FOUR_CLASSES``
order: none, left, right, both. ACAT and its peers (chapter 5) also read each scan's saliency map
(``saliency/{method}/seed{k}/{scan}.npz``, array ``saliency``: (S, H, W), slice for slice aligned with the
tensor's image), split into hemispheres at the image's midline like the image.
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
from cfbrain.models import SALIENCY_MODELS, MultiTaskHemisphereCNN, build_peer, build_saliency_model
from cfbrain.preprocess.ct import CTTensor, load_tensor
from cfbrain.preprocess.hemispheres import split_hemispheres
from cfbrain.settings import from_mapping
from cfbrain.train.augment import RandomBrainFlip
from cfbrain.train.checkpoint import load, load_weights
from cfbrain.train.classification import (PHASE_LRS, finetune_phase, mtl_outputs, mtl_phases, peer_outputs,
                                          peer_phase)
from cfbrain.train.config import Phase, TrainConfig
from cfbrain.train.data import SeededTransformDataset
from cfbrain.train.inference import predict
from cfbrain.train.loop import fit
from cfbrain.train.runtime import seed_everything

log = logging.getLogger(__name__)
HEMISPHERE_MODELS = ("mtl",)
TENSOR = "tensor.npz"
SALIENCY_KEY = "saliency"


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


def load_saliency_map(path: Path, shape: tuple[int, ...]) -> np.ndarray:
    """The (S, H, W) saliency map of one scan (written by ``cfbrain.saliency.maps.write_saliency``; read here
    without importing the saliency methods, which would enter every classifier's code fingerprint) as
    float32; raises unless it has its tensor's ``shape``."""
    with np.load(path, allow_pickle=False) as archive:
        saliency = archive[SALIENCY_KEY].astype(np.float32)
    if saliency.shape != tuple(shape):
        raise ValueError(f"{path}: saliency map {saliency.shape} does not match its tensor's image {tuple(shape)}")
    return saliency


class ScanTensors(Dataset):
    """Preprocessed scans as training samples: {"image": float32 tensor, "label": int64 scalar}, plus
    ``saliency`` (float32, laid out like ``image``) when ``saliency_files`` are given.

    ``layout`` "hemispheres" gives (2, S, H, W/2) [right, left-mirrored] for the MTL CNN and ACAT,
    "full" gives (S, H, W) for the full-brain peers. A saliency map is split at its image's midline.
    """

    def __init__(self, tensor_files: list[Path], labels: list[int], layout: str,
                 saliency_files: list[Path] | None = None):
        if len(tensor_files) != len(labels) or (saliency_files is not None and len(saliency_files) != len(labels)):
            raise ValueError("one label (and saliency map) per tensor file")
        self.files, self.labels, self.layout = list(tensor_files), list(labels), layout
        self.saliency_files = None if saliency_files is None else list(saliency_files)

    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        tensor = load_tensor(self.files[index])
        sample = {"image": self._arrange(tensor.image, tensor),
                  "label": torch.tensor(self.labels[index], dtype=torch.int64)}
        if self.saliency_files is not None:
            saliency = load_saliency_map(self.saliency_files[index], tensor.image.shape)
            sample["saliency"] = self._arrange(saliency, tensor)
        return sample

    def _arrange(self, volume: np.ndarray, tensor: CTTensor) -> torch.Tensor:
        """(S, H, W) -> float32 in ``layout``, split at ``tensor``'s midline for hemispheres."""
        if self.layout == "hemispheres":
            volume = split_hemispheres(volume, tensor.midline_col)
        return torch.from_numpy(np.ascontiguousarray(volume, dtype=np.float32))


@dataclass(frozen=True)
class LoopSettings:
    """What every classifier run passes to the training loop (thesis: Adam with weight decay 5e-5, cosine
    annealing to 1e-7)."""

    batch_size: int = 8
    weight_decay: float = 5e-5
    min_lr: float = 1e-7
    checkpoint_every: int = 50

    def train_config(self, seed: int) -> TrainConfig:
        return TrainConfig(batch_size=self.batch_size, weight_decay=self.weight_decay, min_lr=self.min_lr,
                           checkpoint_every=self.checkpoint_every, seed=seed)


@dataclass(frozen=True)
class ClassifierSettings(LoopSettings):
    """Training settings of the classification config section (thesis: 200 epochs in all).

    ``mtl_lrs`` are the initial learning rates of the three MTL phases (half-brain, heads, fine-tune);
    the thesis's (Table 4.1) are the default. A run with a hundredth of the thesis's optimizer steps
    (the demo) needs larger ones for the heads to move at all.
    """

    mtl_epochs: tuple[int, int, int] = (80, 40, 80)
    mtl_lrs: tuple[float, float, float] = PHASE_LRS
    peer_epochs: int = 200
    peer_lr: float = 1e-4

    @classmethod
    def from_mapping(cls, values: dict) -> "ClassifierSettings":
        return from_mapping(cls, values, "classification training")


def build_model(name: str, shape: tuple[int, int, int]) -> torch.nn.Module:
    """Model ``name`` for tensors of ``shape`` (S, H, W): the ViT peer is built for (H, W), ACAT and the
    slice-attention peers for S slices (randomly initialised: load weights afterwards)."""
    if name in HEMISPHERE_MODELS:
        return MultiTaskHemisphereCNN()
    if name in SALIENCY_MODELS:
        return build_saliency_model(name, shape[0])
    return build_peer(name, tuple(shape[1:]))


def _layout(name: str) -> str:
    """``hemispheres`` for the hemisphere CNN, ACAT and its peers, ``full`` for the full-brain peers."""
    return "hemispheres" if name in HEMISPHERE_MODELS or name in SALIENCY_MODELS else "full"


def tensor_shape(scans: pd.DataFrame, tensor_dir: dict[str, Path]) -> tuple[int, int, int]:
    """(S, H, W) of the first training scan's tensor: the size the models are built for."""
    train = scans[scans.split == "train"]
    if train.empty:
        raise ValueError("the training split is empty")
    n_slices, height, width = load_tensor(Path(tensor_dir[train.scan.iloc[0]]) / TENSOR).image.shape
    return int(n_slices), int(height), int(width)


def training_subset(train: pd.DataFrame, fraction: float, seed: int) -> pd.DataFrame:
    """A ``fraction`` of the training rows (Table 5.5's limited data), stratified by ``label``.

    Within each class the rows are put in a random order drawn from ``seed``; all rows are then ranked by
    their quantile in that order, so the first round(fraction * n) rows (at least one) hold every class
    in proportion, and a smaller fraction's subset lies inside a larger one's. Rows keep their order.
    """
    if not 0 < fraction <= 1:
        raise ValueError(f"the training fraction must be in (0, 1], got {fraction}")
    rng = np.random.default_rng(seed)
    quantile = np.empty(len(train))
    for rows in train.groupby("label", sort=True).indices.values():
        quantile[rng.permutation(rows)] = (np.arange(len(rows)) + 0.5) / len(rows)
    order = np.lexsort((rng.random(len(train)), quantile))
    keep = np.sort(order[:max(1, round(fraction * len(train)))])
    return train.iloc[keep]


def training_phases(name: str, train_labels: list[int], settings: ClassifierSettings) -> list[Phase]:
    """The thesis's three phases for the hemisphere model, one full-brain phase for a peer."""
    if name in HEMISPHERE_MODELS:
        return mtl_phases(train_labels, settings.mtl_epochs, settings.mtl_lrs)
    return [peer_phase(train_labels, settings.peer_epochs, settings.peer_lr)]


@dataclass(frozen=True)
class SaliencyClassifierSettings(LoopSettings):
    """Training settings of ACAT and its peers (thesis 003 section 5.6.2: fine-tuned from the baseline for
    100 epochs at lr 1e-5, class-weighted loss)."""

    epochs: int = 100
    lr: float = 1e-5

    @classmethod
    def from_mapping(cls, values: dict) -> "SaliencyClassifierSettings":
        return from_mapping(cls, values, "saliency-model training")


def _dataset(table: pd.DataFrame, tensor_dir: dict[str, Path], layout: str,
             saliency_file: dict[str, Path] | None = None) -> ScanTensors:
    return ScanTensors([Path(tensor_dir[s]) / TENSOR for s in table.scan], table.label.tolist(), layout,
                       None if saliency_file is None else [Path(saliency_file[s]) for s in table.scan])


def _fit_classifier(model: torch.nn.Module, phases: list[Phase], name: str, train: pd.DataFrame, val: pd.DataFrame,
                    tensor_dir: dict[str, Path], saliency_file: dict[str, Path] | None, config: TrainConfig,
                    out_dir: Path, checkpoint_dir: Path) -> Path:
    """``fit`` on flip-augmented training scans (saliency maps flipped with their images), validating on val."""
    layout = _layout(name)
    augmented = SeededTransformDataset(_dataset(train, tensor_dir, layout, saliency_file),
                                       RandomBrainFlip(layout=layout), config.seed)
    fit(model, phases, augmented, _dataset(val, tensor_dir, layout, saliency_file) if len(val) else None, config,
        out_dir, checkpoint_dir=checkpoint_dir)
    return Path(out_dir) / "final.pt"


def _train_val(scans: pd.DataFrame, train_fraction: float, seed: int) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The training rows (all for ``train_fraction`` 1) and the validation rows of ``scans``."""
    return training_subset(scans[scans.split == "train"], train_fraction, seed), scans[scans.split == "val"]


def train_classifier(name: str, scans: pd.DataFrame, tensor_dir: dict[str, Path], settings: ClassifierSettings,
                     seed: int, out_dir: Path, checkpoint_dir: Path, train_fraction: float = 1.0) -> Path:
    """Train model ``name`` on the train split of ``scans`` (see :func:`scan_table`), or on a stratified
    ``train_fraction`` of it (:func:`training_subset`), validating on val.

    Writes ``out_dir/final.pt``, ``train_log.tsv`` and ``training_curves.png``; resumes from
    ``checkpoint_dir/last.pt`` after a kill. Returns the path of the final weights.
    """
    train, val = _train_val(scans, train_fraction, seed)
    shape = tensor_shape(scans, tensor_dir)
    seed_everything(seed)
    model = build_model(name, shape)
    return _fit_classifier(model, training_phases(name, train.label.tolist(), settings), name, train, val,
                           tensor_dir, None, settings.train_config(seed), out_dir, checkpoint_dir)


def train_saliency_classifier(name: str, scans: pd.DataFrame, tensor_dir: dict[str, Path],
                              saliency_file: dict[str, Path], settings: SaliencyClassifierSettings, seed: int,
                              out_dir: Path, checkpoint_dir: Path, baseline_weights: Path | None,
                              train_fraction: float = 1.0) -> Path:
    """Train ACAT or a peer (``SALIENCY_MODELS``) like :func:`train_classifier`, each scan with its saliency
    map (``saliency_file``: scan -> ``.npz``), in one ``finetune`` phase over every parameter.

    ``baseline_weights``: the trained hemisphere CNN's ``final.pt``, whose trunk and heads the model starts
    from (thesis); None trains from scratch (Table 5.6 compares the baseline with ACAT trained so).
    Writes and returns like :func:`train_classifier`.
    """
    train, val = _train_val(scans, train_fraction, seed)
    shape = tensor_shape(scans, tensor_dir)
    seed_everything(seed)
    baseline = None if baseline_weights is None else load(baseline_weights)["model"]
    model = build_saliency_model(name, shape[0], baseline)
    phases = [finetune_phase(train.label.tolist(), settings.epochs, settings.lr)]
    return _fit_classifier(model, phases, name, train, val, tensor_dir, saliency_file, settings.train_config(seed),
                           out_dir, checkpoint_dir)


def predict_classifier(name: str, weights: Path, scans: pd.DataFrame, tensor_dir: dict[str, Path],
                       saliency_file: dict[str, Path] | None = None) -> pd.DataFrame:
    """Test-split predictions: scan, label, pred and the class probabilities; ACAT and its peers read
    each scan's saliency map from ``saliency_file`` (scan -> ``.npz``)."""
    test = scans[scans.split == "test"]
    if test.empty:
        raise ValueError("the test split is empty: more patients or other split fractions are needed")
    if (name in SALIENCY_MODELS) != (saliency_file is not None):
        raise ValueError(f"model {name!r}: saliency maps are needed by, and only by, {SALIENCY_MODELS}")
    model = load_weights(build_model(name, tensor_shape(scans, tensor_dir)), weights)
    outputs = predict(model, _dataset(test, tensor_dir, _layout(name), saliency_file),
                      peer_outputs if _layout(name) == "full" else mtl_outputs)
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
