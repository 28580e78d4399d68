"""The MRI editing experiment as the workflow runs it (thesis 000 §4-5): one function per workflow step.

Steps: slices of a source (:func:`source_slices`), a split by subject (:func:`slice_splits`), training of
the denoisers (:func:`train_denoiser`, one per training seed of ``mededit.seeds``), the segmenter and the
feature autoencoder on the training split (:func:`train_on_slices`), triplets of the test split
(:func:`experiment_triplets`), one editing method over them with a seed's denoiser (:func:`edit`) and its
scores (:func:`score`), the tables over seeds (:func:`mededit_report`).

Sources (``kind``): ``synthetic_mri`` (a cohort of :mod:`cfbrain.synth.mri`; ``lesion`` picks its stroke or
tumour dataset), ``atlas`` (ATLAS v2.0 BIDS root), ``brats`` (BraTS 2023 root). Slices are ``size`` x
``size`` (thesis 128) with the thesis's slice index and percentile per dataset.

Test-split roles: a slice is *pathological* when its lesion mask is non-empty (the masks to add and the
real set of FID/KID), *healthy* otherwise (the priors of random triplets). On ATLAS/BraTS a healthy slice
is a patient's slice that shows no lesion, as in the thesis.
"""
from __future__ import annotations

import dataclasses
import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from torch import nn

from cfbrain.mededit.data import SliceDataset, random_flip, select_scans
from cfbrain.mededit.evaluate import evaluate_counterfactuals, mededit_markdown
from cfbrain.mededit.methods import CounterfactualSet, parse_method, run_method
from cfbrain.mededit.nnunet import NnUNetSettings, nnunet_segment
from cfbrain.mededit.triplets import Triplets, counterpart_triplets, random_triplets
from cfbrain.metrics.generative import extract_features
from cfbrain.models.diffusion_unet import DiffusionUNetConfig, diffusion_phase, diffusion_unet, load_eps_model
from cfbrain.models.segmenter import SegmenterConfig, load_segmenter, segment
from cfbrain.preprocess.mri import (ATLAS_SPEC, BRATS_SPEC, MRISliceSet, MRISliceSpec, find_atlas_pairs,
                                    find_brats_pairs, process_mri_dataset)
from cfbrain.preprocess.splits import patient_splits
from cfbrain.settings import from_mapping
from cfbrain.synth.mri import TruthSlices, find_synthetic_pairs, slice_spec
from cfbrain.train import SeededTransformDataset, TrainConfig, Phase, fit, seed_everything
from cfbrain.train.loop import SchedulerFactory, constant_lr, cosine_annealing

log = logging.getLogger(__name__)

SOURCE_KINDS = ("synthetic_mri", "atlas", "brats")
SPLIT_COLUMNS = ["scan", "subject", "split", "size_group", "lesion_area"]
PAIRINGS = ("random", "counterpart")


def source_spec(kind: str, size: int, lesion: str | None = None) -> MRISliceSpec:
    """The slice spec of a source (module docstring); ``lesion`` ("stroke" or "tumour") for synthetic ones."""
    if kind == "synthetic_mri":
        return slice_spec(lesion, size)
    if kind in ("atlas", "brats"):
        return dataclasses.replace(ATLAS_SPEC if kind == "atlas" else BRATS_SPEC, size=size)
    raise ValueError(f"unknown MRI source kind {kind!r}; expected one of {SOURCE_KINDS}")


def source_slices(kind: str, root: str | Path, size: int, lesion: str | None = None
                  ) -> tuple[MRISliceSet, pd.DataFrame]:
    """Slice set and status table of every scan found under ``root``.

    The table has one row per scan found (``preprocess.mri.SLICE_COLUMNS`` plus ``subject``), kept or
    excluded with stage and reason.

    Raises:
        ValueError: if no scan gives a usable slice (the message counts the exclusion reasons).
    """
    pairs = (find_synthetic_pairs(root, lesion) if kind == "synthetic_mri"
             else find_atlas_pairs(root) if kind == "atlas" else find_brats_pairs(root))
    slices, status = process_mri_dataset(pairs, source_spec(kind, size, lesion))
    status.insert(1, "subject", pairs["subject"].to_numpy())
    if len(slices.scan) == 0:
        reasons = status["reason"].value_counts().to_dict()
        raise ValueError(f"no usable {kind} slice under {root}: {len(status)} scans found, reasons {reasons}")
    return slices, status


def slice_splits(status: pd.DataFrame, seed: int, fractions: tuple[float, float, float]) -> pd.DataFrame:
    """Train/val/test split of the kept slices by subject, stratified by size group (healthy, small,
    medium, large): SPLIT_COLUMNS, one row per kept scan, sorted by scan."""
    kept = status[status["status"] == "kept"]
    assigned = patient_splits(kept, seed, fractions, stratify="size_group", patient_col="subject")
    table = kept.merge(assigned[["subject", "split"]], on="subject", how="left")
    return table[SPLIT_COLUMNS].sort_values("scan").reset_index(drop=True)


def split_scans(splits: pd.DataFrame, split: str, pathological: bool | None = None) -> list[str]:
    """Scans of one split, optionally only the pathological (True) or healthy (False) ones, sorted."""
    rows = splits[splits["split"] == split]
    if pathological is not None:
        rows = rows[(rows["lesion_area"] > 0) == pathological]
    return sorted(rows["scan"])


# --------------------------------------------------------------------------- training


def train_settings(values: Mapping) -> TrainConfig:
    """A ``training`` config section as :class:`TrainConfig` (unknown keys are an error)."""
    return from_mapping(TrainConfig, values, "training")


def train_on_slices(build: Callable[[], nn.Module], phase: Phase, slices: MRISliceSet, splits: pd.DataFrame,
                    config: TrainConfig, out_dir: Path, checkpoint_dir: Path, *, pathological_only: bool = False,
                    scheduler_factory: SchedulerFactory = cosine_annealing) -> Path:
    """Train the model ``build()`` makes (built after seeding with ``config.seed``) on the training split
    (its pathological slices only with ``pathological_only``), left-right flips as augmentation, validating
    on the val split's slices of the same kind when it has some; resumable from ``checkpoint_dir``. Returns
    ``out_dir/final.pt`` (``train_log.tsv`` and ``training_curves.png`` beside it).
    """
    kind = True if pathological_only else None
    train_scans, val_scans = split_scans(splits, "train", kind), split_scans(splits, "val", kind)
    if not train_scans:
        raise ValueError(f"the training split has no {'pathological ' if pathological_only else ''}slice")
    seed_everything(config.seed)
    model = build()
    train = SeededTransformDataset(SliceDataset(select_scans(slices, train_scans)), random_flip, config.seed)
    val = SliceDataset(select_scans(slices, val_scans)) if val_scans else None
    log.info("%s: %d training and %d validation slices, %d epochs", phase.name, len(train_scans),
             len(val_scans), phase.resolved(config)[0])
    fit(model, [phase], train, val, config, Path(out_dir), checkpoint_dir=Path(checkpoint_dir),
        scheduler_factory=scheduler_factory)
    return Path(out_dir) / "final.pt"


def denoiser_variant(network: str) -> tuple[str, bool]:
    """(variant, box masks) of a denoiser key ``{mededit,palette}[_box]`` (``MethodSpec.network``)."""
    variant, _, box = network.partition("_")
    if variant not in ("mededit", "palette") or box not in ("", "box"):
        raise ValueError(f"unknown denoiser {network!r}; expected {{mededit,palette}}[_box]")
    return variant, bool(box)


LR_SCHEDULES: dict[str, SchedulerFactory] = {"constant": constant_lr, "cosine": cosine_annealing}
TRAINING_SLICES = ("pathological", "all")


@dataclass(frozen=True)
class DenoiserTraining:
    """How a denoiser trains: :class:`TrainConfig` plus two choices, both in ``mededit.ddpm.training``.

    Defaults are thesis 000's (§4.1: Adam at a fixed 1e-4 on the pathological training slices, "to generate
    pathological brain scans"): ``lr_schedule`` ``constant`` (``cosine``: decay to ``min_lr``, the shared
    loop's default) and ``slices`` ``pathological`` (``all``: the healthy training slices too, with empty
    pathology masks). The seed is the run's (``mededit.seeds``), never a key of the section.
    """

    train: TrainConfig
    lr_schedule: str = "constant"
    slices: str = "pathological"

    def __post_init__(self) -> None:
        if self.lr_schedule not in LR_SCHEDULES:
            raise ValueError(f"unknown lr_schedule {self.lr_schedule!r}; expected one of {sorted(LR_SCHEDULES)}")
        if self.slices not in TRAINING_SLICES:
            raise ValueError(f"unknown training slices {self.slices!r}; expected one of {TRAINING_SLICES}")

    @classmethod
    def from_mapping(cls, values: Mapping, seed: int) -> DenoiserTraining:
        """From a ``mededit.ddpm.training`` section and the run's seed (unknown keys are an error)."""
        if "seed" in values:
            raise ValueError("the denoisers' training seeds are mededit.seeds; remove mededit.ddpm.training.seed")
        options = {key: values[key] for key in ("lr_schedule", "slices") if key in values}
        rest = {key: value for key, value in values.items() if key not in options}
        return cls(train=train_settings({**rest, "seed": seed}), **options)


def train_denoiser(network: str, unet: DiffusionUNetConfig, settings: DenoiserTraining, slices: MRISliceSet,
                   splits: pd.DataFrame, out_dir: Path, checkpoint_dir: Path) -> Path:
    """Train the denoiser ``network`` (:func:`denoiser_variant` key) with ``settings``; ``out_dir/final.pt``."""
    variant, box = denoiser_variant(network)
    return train_on_slices(lambda: diffusion_unet(variant, unet), diffusion_phase(variant, box_masks=box), slices,
                           splits, settings.train, out_dir, checkpoint_dir,
                           pathological_only=settings.slices == "pathological",
                           scheduler_factory=LR_SCHEDULES[settings.lr_schedule])


# --------------------------------------------------------------------------- editing


@dataclass(frozen=True)
class SamplingSettings:
    """How the editing methods are run: ``stride`` subsamples the T = 1000 levels (1 = all, the thesis),
    ``batch_size`` images per sampler call, SDEdit's encoding ratio (thesis: 0.2 strokes, 0.6 tumours),
    ``clip_x0``: clamp ``x̂_0`` to [-1, 1] in every reverse step (thesis: no, eq. 3.1; MONAI's scheduler,
    which the authors' code uses, clips by default). The sampler seed is the run's (``mededit.seeds``)."""

    stride: int = 1
    batch_size: int = 16
    sdedit_ratio: float = 0.2
    clip_x0: bool = False

    @classmethod
    def from_mapping(cls, values: Mapping) -> SamplingSettings:
        return from_mapping(cls, values, "sampling")


def experiment_triplets(pairing: str, slices: MRISliceSet, splits: pd.DataFrame, seed: int,
                        truth: TruthSlices | None = None) -> Triplets:
    """Triplets of the test split: ``random`` (each pathological slice's mask on a random healthy slice) or
    ``counterpart`` (each pathological synthetic slice's mask on its own healthy counterpart, ``truth``).

    Raises:
        ValueError: if the test split has no pathological slice, or counterpart pairing has no ``truth``.
    """
    lesioned = split_scans(splits, "test", pathological=True)
    if not lesioned:
        raise ValueError("the test split has no slice with a lesion: nothing to add to healthy scans")
    if pairing == "random":
        return random_triplets(slices, lesioned, split_scans(splits, "test", pathological=False), seed)
    if pairing != "counterpart":
        raise ValueError(f"unknown pairing {pairing!r}; expected one of {PAIRINGS}")
    if truth is None:
        raise ValueError("counterpart pairing needs the synthetic ground truth")
    with_truth = {scan for scan, mask in zip(truth.scan.tolist(), truth.lesion_mask) if mask.any()}
    missing = sorted(set(lesioned) - with_truth)
    if missing:
        raise ValueError(f"test scans without a ground-truth lesion on the slice: {missing[:5]}")
    return counterpart_triplets(truth, lesioned)


def edit(method: str, triplets: Triplets, weights: Mapping[str, Path], unet: DiffusionUNetConfig,
         sampling: SamplingSettings, seed: int, device: torch.device) -> CounterfactualSet:
    """Counterfactuals of every triplet with ``method`` and the run's ``seed``; ``weights`` maps the denoiser
    key the method needs (``MethodSpec.network``) to its trained ``final.pt`` (EMA weights are used)."""
    spec = parse_method(method)
    variant, _ = denoiser_variant(spec.network)
    model = load_eps_model(weights[spec.network], variant, unet, device=device)
    return run_method(spec, {spec.network: model}, triplets, sdedit_ratio=sampling.sdedit_ratio,
                      stride=sampling.stride, batch_size=sampling.batch_size, seed=seed, clip_x0=sampling.clip_x0,
                      device=device)


# --------------------------------------------------------------------------- scoring


def feature_extractor_name(radimagenet_weights: str | None) -> str:
    """What the FID/KID features are, for the table."""
    if radimagenet_weights:
        return f"RadImageNet ResNet-50 ({Path(radimagenet_weights).name})"
    return "in-domain autoencoder trained by the pipeline (no RadImageNet weights configured)"


SEGMENTER_BACKENDS = ("monai", "nnunet")


def lesion_segmentation(backend: str, device: torch.device, *, weights: str | Path | None = None,
                        network: Mapping | None = None, nnunet: Mapping | None = None
                        ) -> Callable[[np.ndarray], np.ndarray]:
    """The Dice segmenter as a function from images (N, H, W) in [0, 1] to masks uint8 (N, H, W): the trained
    MONAI UNet (``weights``, ``network`` = SegmenterConfig fields) or a trained nnU-Net v2 (``nnunet`` =
    :class:`~cfbrain.mededit.nnunet.NnUNetSettings` fields)."""
    if backend == "nnunet":
        if not nnunet:
            raise ValueError("segmenter backend nnunet needs mededit.segmenter.nnunet.model_folder")
        settings = NnUNetSettings.from_mapping(nnunet)
        return lambda images: nnunet_segment(images, settings, device.type)
    if backend != "monai":
        raise ValueError(f"unknown segmenter backend {backend!r}; expected one of {SEGMENTER_BACKENDS}")
    model = load_segmenter(weights, SegmenterConfig.from_mapping(network or {}), device=device)
    return lambda images: segment(model, images)


def score(results: Sequence[CounterfactualSet], triplets: Triplets, real_images: np.ndarray,
          segment_images: Callable[[np.ndarray], np.ndarray], extractor: nn.Module, *, n_bootstrap: int,
          kid_subsets: int, seed: int) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Summary rows (one per method) and per-image rows of methods run on the same ``triplets``
    (:func:`~cfbrain.mededit.evaluate.evaluate_counterfactuals`), Dice from ``segment_images``
    (:func:`lesion_segmentation`), FID/KID against ``real_images`` (N, H, W) in [0, 1], the real pathological
    test slices."""
    real = extract_features(extractor, real_images).numpy()
    # one segmenter call for all methods: nnU-Net starts a process and loads its model per call
    all_masks = segment_images(np.concatenate([result.counterfactual for result in results]))
    masks = np.split(all_masks, np.cumsum([len(result.counterfactual) for result in results])[:-1])
    summaries, per_image = [], []
    for result, predicted in zip(results, masks):
        fake = extract_features(extractor, result.counterfactual).numpy()
        summary, images = evaluate_counterfactuals(result, triplets, predicted, real, fake, n_bootstrap=n_bootstrap,
                                                   kid_subsets=kid_subsets, seed=seed)
        summaries.append(summary)
        per_image.append(images)
    return pd.DataFrame(summaries), pd.concat(per_image, ignore_index=True)


PAIRING_TITLES = {
    "random": "random pairing (thesis protocol: each test lesion mask on a random healthy test slice)",
    "counterpart": "counterpart pairing (synthetic truth: each test lesion on its own healthy counterpart)",
}


def mededit_report(summary: pd.DataFrame, dataset: str) -> str:
    """``tables/mededit.md``: the thesis tables (:func:`~cfbrain.mededit.evaluate.mededit_markdown`) per
    pairing, from score rows with ``pairing``, ``seed`` and ``feature_extractor`` columns, and the extractor
    used."""
    parts = [mededit_markdown(summary[summary["pairing"] == pairing], f"MedEdit on {dataset}: {title}")
             for pairing, title in PAIRING_TITLES.items() if (summary["pairing"] == pairing).any()]
    parts.append(f"FID/KID feature extractor: {'; '.join(summary['feature_extractor'].unique())}.\n")
    return "\n".join(parts)
