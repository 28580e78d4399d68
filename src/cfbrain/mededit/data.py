"""Training data of the MRI editing experiment: slice sets (``preprocess.mri.MRISliceSet``) as torch datasets.

Samples are dicts of float32 tensors (1, H, W): ``image`` in [0, 1], ``lesion_mask`` and ``brain_mask`` in
{0, 1}, the batch format of the losses in :mod:`cfbrain.models.diffusion_unet`,
:mod:`cfbrain.models.segmenter` and :mod:`cfbrain.models.features`.
"""
from __future__ import annotations

from collections.abc import Iterable

import numpy as np
import torch
from torch.utils.data import Dataset

from cfbrain.preprocess.mri import MRISliceSet


def select_scans(slices: MRISliceSet, scans: Iterable[str]) -> MRISliceSet:
    """The slices of ``scans`` (in the slice set's order); unknown scan names are an error."""
    wanted = set(scans)
    missing = wanted - set(slices.scan.tolist())
    if missing:
        raise KeyError(f"scans not in the {slices.dataset} slice set: {sorted(missing)[:5]}")
    keep = np.isin(slices.scan, list(wanted))
    return MRISliceSet(dataset=slices.dataset, scan=slices.scan[keep], image=slices.image[keep],
                       lesion_mask=slices.lesion_mask[keep], brain_mask=slices.brain_mask[keep])


class SliceDataset(Dataset):
    """Map-style dataset over the slices of an ``MRISliceSet`` (module docstring)."""

    def __init__(self, slices: MRISliceSet) -> None:
        self.image = torch.from_numpy(np.ascontiguousarray(slices.image, dtype=np.float32))[:, None]
        self.lesion_mask = torch.from_numpy((slices.lesion_mask > 0).astype(np.float32))[:, None]
        self.brain_mask = torch.from_numpy((slices.brain_mask > 0).astype(np.float32))[:, None]

    def __len__(self) -> int:
        return self.image.shape[0]

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        return {"image": self.image[index], "lesion_mask": self.lesion_mask[index],
                "brain_mask": self.brain_mask[index]}


def random_flip(sample: dict[str, torch.Tensor], generator: np.random.Generator) -> dict[str, torch.Tensor]:
    """Left-right flip of every tensor of a sample with probability 1/2 (a
    ``cfbrain.train.SeededTransformDataset`` transform; lesions occur in either hemisphere)."""
    if generator.random() < 0.5:
        return {key: value.flip(-1) for key, value in sample.items()}
    return sample
