"""Chapter-6 slices as training data: splits by subject (thesis 003 §6.6.1, 70/15/15) and torch datasets.

Slice sets are :class:`cfbrain.preprocess.mri.VolumeSliceSet` (images (N, C, H, W) in [0, 1]). Samples are
dicts of float32 tensors: ``image`` (C, H, W) in [0, 1] and ``label`` () in {0, 1} (1 = the slice shows a
lesion); the autoencoder of the saliency search sees single planes ``image`` (1, H, W).
"""
from __future__ import annotations

import numpy as np
import pandas as pd
import torch
from torch.utils.data import Dataset

from cfbrain.preprocess.mri import VolumeSliceSet
from cfbrain.preprocess.splits import patient_splits

SPLIT_FRACTIONS = (0.7, 0.15, 0.15)


def slice_splits(slices: VolumeSliceSet, seed: int, fractions: tuple[float, float, float] = SPLIT_FRACTIONS
                 ) -> pd.DataFrame:
    """Train/val/test by subject, stratified by whether the subject has a lesion slice: columns subject,
    split (one row per subject, sorted)."""
    table = pd.DataFrame({"subject": slices.subject, "lesion": slices.lesion.astype(int)})
    per_subject = table.groupby("subject", as_index=False)["lesion"].max()
    return patient_splits(per_subject, seed, fractions, stratify="lesion", patient_col="subject")[["subject", "split"]]


def split_slices(slices: VolumeSliceSet, splits: pd.DataFrame, split: str, lesion: bool | None = None
                 ) -> VolumeSliceSet:
    """The slices of one split's subjects, optionally only those with (True) or without (False) a lesion."""
    subjects = set(splits.loc[splits["split"] == split, "subject"])
    keep = np.isin(slices.subject, list(subjects))
    if lesion is not None:
        keep &= slices.lesion == lesion
    return slices.select(keep)


class SliceImages(Dataset):
    """``{"image": (C, H, W), "label": ()}`` per slice (module docstring)."""

    def __init__(self, slices: VolumeSliceSet) -> None:
        self.image = torch.from_numpy(np.ascontiguousarray(slices.image, dtype=np.float32))
        self.label = torch.from_numpy(slices.lesion.astype(np.float32))

    def __len__(self) -> int:
        return self.image.shape[0]

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        return {"image": self.image[index], "label": self.label[index]}


class SlicePlanes(Dataset):
    """Every contrast plane of every slice as ``{"image": (1, H, W)}`` (the saliency autoencoder's data)."""

    def __init__(self, slices: VolumeSliceSet) -> None:
        image = np.ascontiguousarray(slices.image, dtype=np.float32)
        self.image = torch.from_numpy(image.reshape(-1, 1, *image.shape[-2:]))

    def __len__(self) -> int:
        return self.image.shape[0]

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        return {"image": self.image[index]}


def flip_sample(sample: dict[str, torch.Tensor], generator: np.random.Generator) -> dict[str, torch.Tensor]:
    """Left-right flip of the image with probability 1/2 (a ``SeededTransformDataset`` transform)."""
    if generator.random() < 0.5:
        return {**sample, "image": sample["image"].flip(-1)}
    return sample
