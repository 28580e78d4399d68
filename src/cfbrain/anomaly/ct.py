"""CT slices for chapter 6 (thesis 003 §6.6.1): the preprocessed CT tensors' slices resized to the diffusion
size, chapter 5's saliency maps on the same grid, and the in-domain KID feature autoencoder.

Each scan is its own "subject" (the CT splits are already by patient, ``splits/seed{k}.tsv``); a slice is
one channel (C = 1, HU-windowed [0, 1], contract 7). The tensor's (S, H, W) planes are padded to a square
and resized to ``size`` (bilinear; masks nearest), exactly like the saliency maps, so map and slice align.
"""
from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import numpy as np
import pandas as pd

from cfbrain.anomaly.data import SlicePlanes
from cfbrain.models.features import AutoencoderConfig, SliceAutoencoder, autoencoder_phase
from cfbrain.preprocess.ct import load_tensor
from cfbrain.preprocess.geometry import resize_planes
from cfbrain.preprocess.mri import VolumeSliceSet, centre_crop_or_pad
from cfbrain.saliency import read_saliency
from cfbrain.train import TrainConfig, fit, seed_everything


def square_planes(planes: np.ndarray, size: int, mode: str) -> np.ndarray:
    """(S, H, W) -> float32 (S, size, size): centre pad to a square of side max(H, W), then resize."""
    side = max(planes.shape[-2:])
    return resize_planes(centre_crop_or_pad(np.asarray(planes, np.float32), (side, side)), (size, size), mode)


def ct_slices(tensors: Mapping[str, Path], size: int) -> tuple[VolumeSliceSet, pd.DataFrame]:
    """Every slice of every scan's ``tensor.npz`` (``tensors``: scan -> path) as a one-channel slice set
    (module docstring; slice_index: the position in the tensor, 0..S-1; lesion_mask: the tensor's when it has
    one, else empty) and a status table with one
    "kept" row per scan (the CT chain excluded the others upstream, ``qc/exclusions.tsv``)."""
    fields: dict[str, list] = {k: [] for k in ("scan", "slice_index", "image", "lesion_mask", "brain_mask")}
    rows = []
    for scan, path in sorted(tensors.items()):
        tensor = load_tensor(path)
        n = len(tensor.image)
        lesion = tensor.lesion_mask if tensor.lesion_mask is not None else np.zeros_like(tensor.brain_mask)
        fields["scan"].append(np.full(n, scan))
        fields["slice_index"].append(np.arange(n, dtype=np.int64))
        fields["image"].append(np.clip(square_planes(tensor.image, size, "bilinear"), 0, 1)[:, None])
        fields["lesion_mask"].append(square_planes(lesion, size, "nearest").astype(np.uint8))
        fields["brain_mask"].append(square_planes(tensor.brain_mask, size, "nearest").astype(np.uint8))
        rows.append({"scan": scan, "subject": scan, "stage": "ct_slices", "status": "kept", "reason": "", "detail": "",
                     "n_slices": n, "n_lesion_slices": int(lesion.reshape(n, -1).any(axis=1).sum())})
    if not rows:
        empty = np.zeros((0, size, size), np.uint8)
        slices = VolumeSliceSet("ct", ("ct",), ("ct",), np.zeros(0, str), np.zeros(0, str), np.zeros(0, np.int64),
                                np.zeros((0, 1, size, size), np.float32), empty, empty, empty)
        return slices, pd.DataFrame(rows, columns=["scan", "subject", "stage", "status", "reason", "detail",
                                                   "n_slices", "n_lesion_slices"])
    joined = {k: np.concatenate(v) for k, v in fields.items()}
    slices = VolumeSliceSet("ct", ("ct",), ("ct",), joined["scan"], joined["scan"].copy(), joined["slice_index"],
                            joined["image"].astype(np.float32), joined["lesion_mask"], joined["brain_mask"],
                            np.zeros_like(joined["lesion_mask"]))
    return slices, pd.DataFrame(rows)


def ct_saliency(paths: Mapping[str, Path], scans: np.ndarray, slice_index: np.ndarray, size: int) -> np.ndarray:
    """Chapter 5's maps (``saliency/full/{method}/seed{k}/{scan}.npz``, (S, H, W) per scan) of the slices
    (``scans``, ``slice_index``: the position in the scan's tensor, as :func:`ct_slices` writes it):
    float32 (N, size, size) in [0, 1]."""
    resized = {scan: np.clip(square_planes(read_saliency(paths[scan]).values.astype(np.float32), size, "bilinear"), 0, 1)
               for scan in dict.fromkeys(scans.tolist())}
    maps = [resized[scan][int(i)] for scan, i in zip(scans, slice_index)]
    return np.stack(maps) if maps else np.zeros((0, size, size), np.float32)


def train_kid_autoencoder(train: VolumeSliceSet, config: TrainConfig, out_dir: Path, checkpoint_dir: Path) -> Path:
    """The in-domain KID feature extractor on CT (MedEdit's :class:`SliceAutoencoder` with its default
    architecture, which :func:`cfbrain.metrics.anomaly.kid_features` loads; pixel MSE) trained on every
    training slice; returns ``out_dir/final.pt``."""
    seed_everything(config.seed)
    fit(SliceAutoencoder(AutoencoderConfig()), [autoencoder_phase()], SlicePlanes(train), None, config, Path(out_dir),
        checkpoint_dir=Path(checkpoint_dir))
    return Path(out_dir) / "final.pt"
