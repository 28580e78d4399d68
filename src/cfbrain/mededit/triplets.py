"""Counterfactual triplets (thesis 000 §4.1): which pathology mask is added to which healthy scan.

A triplet is (prior scan, the prior's brain mask, pathology mask). Two ways to build them:

* ``random`` (the thesis, any dataset): every test pathology mask is paired with a healthy scan drawn
  by ``numpy.random.default_rng(seed)``: a random permutation of the healthy scans while they last
  (each prior used once when there are at least as many priors as masks), otherwise drawn with replacement.
  The true lesioned image is unknown, so only FID/KID, Dice and the fidelity error apply.
* ``counterpart`` (synthetic data): every lesioned test scan's mask is added to its own healthy counterpart
  (``cfbrain.synth.mri.TruthSlices``), so the true lesioned image ``lesioned`` is known and the
  indirect-effect score applies too.

Images are float32 (N, H, W) in [0, 1]; masks uint8 (N, H, W) in {0, 1}.
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from cfbrain.metrics.segmentation import box_masks
from cfbrain.preprocess.mri import MRISliceSet
from cfbrain.preprocess.npz import read_npz, write_npz
from cfbrain.synth.mri import TruthSlices

TRIPLETS_FORMAT = "cfbrain-counterfactual-triplets/1"


@dataclass(frozen=True)
class Triplets:
    """N triplets: ``prior``, ``brain_mask`` (of the prior), ``lesion_mask`` (the pathology to add, from scan
    ``mask_scan``), the names ``prior_scan``, ``mask_scan`` (N,) str, and ``lesioned`` (the true lesioned image
    on the prior's intensity scale) or None."""

    mode: str
    prior_scan: np.ndarray
    mask_scan: np.ndarray
    prior: np.ndarray
    brain_mask: np.ndarray
    lesion_mask: np.ndarray
    lesioned: np.ndarray | None = None

    def __len__(self) -> int:
        return len(self.prior_scan)

    def pathology_mask(self, box: bool) -> np.ndarray:
        """The conditioning mask: the lesion mask or its filled bounding box, uint8 (N, H, W)."""
        return box_masks(self.lesion_mask) if box else self.lesion_mask.astype(np.uint8)


def random_triplets(slices: MRISliceSet, pathology_scans: Sequence[str], prior_scans: Sequence[str], seed: int
                    ) -> Triplets:
    """Pair each pathology mask with a random healthy prior (module docstring), in the order of
    ``pathology_scans``.

    Raises:
        ValueError: if a pathology scan has an empty lesion mask, a prior is not lesion-free, or there
            are no priors.
    """
    index = {scan: i for i, scan in enumerate(slices.scan.tolist())}
    masks = np.array([index[s] for s in pathology_scans], dtype=np.int64)
    priors = np.array([index[s] for s in prior_scans], dtype=np.int64)
    if len(priors) == 0:
        raise ValueError("no healthy priors to pair the pathology masks with")
    if len(masks) and not slices.lesion_mask[masks].any(axis=(1, 2)).all():
        raise ValueError("every pathology scan needs a non-empty lesion mask")
    if slices.lesion_mask[priors].any():
        raise ValueError("priors must be lesion-free on the slice")
    rng = np.random.default_rng(seed)
    if len(priors) >= len(masks):
        chosen = priors[rng.permutation(len(priors))[: len(masks)]]
    else:
        chosen = priors[rng.integers(0, len(priors), len(masks))]
    return Triplets(mode="random", prior_scan=slices.scan[chosen], mask_scan=slices.scan[masks],
                    prior=slices.image[chosen].astype(np.float32),
                    brain_mask=slices.brain_mask[chosen].astype(np.uint8),
                    lesion_mask=slices.lesion_mask[masks].astype(np.uint8))


def counterpart_triplets(truth: TruthSlices, scans: Sequence[str]) -> Triplets:
    """Each lesioned scan's mask on its own healthy counterpart, with the true lesioned image (synthetic data).

    Scans whose slice shows no lesion are an error (they have nothing to add).
    """
    index = {scan: i for i, scan in enumerate(truth.scan.tolist())}
    rows = np.array([index[s] for s in scans], dtype=np.int64)
    if len(rows) and not truth.lesion_mask[rows].any(axis=(1, 2)).all():
        raise ValueError("every counterpart scan needs a non-empty lesion mask on the slice")
    names = truth.scan[rows]
    return Triplets(mode="counterpart", prior_scan=names, mask_scan=names, prior=truth.healthy[rows],
                    brain_mask=truth.healthy_brain_mask[rows], lesion_mask=truth.lesion_mask[rows],
                    lesioned=truth.lesioned[rows])


def save_triplets(path: str | Path, triplets: Triplets) -> None:
    """Write triplets as .npz (field names as keys; ``lesioned`` only when known)."""
    arrays = {"format": np.str_(TRIPLETS_FORMAT), "mode": np.str_(triplets.mode),
              "prior_scan": triplets.prior_scan.astype(str), "mask_scan": triplets.mask_scan.astype(str),
              "prior": triplets.prior, "brain_mask": triplets.brain_mask, "lesion_mask": triplets.lesion_mask}
    if triplets.lesioned is not None:
        arrays["lesioned"] = triplets.lesioned
    write_npz(path, arrays)


def load_triplets(path: str | Path) -> Triplets:
    """Read a file written by :func:`save_triplets`."""
    arrays = read_npz(path, TRIPLETS_FORMAT)
    return Triplets(mode=str(arrays["mode"]), prior_scan=arrays["prior_scan"], mask_scan=arrays["mask_scan"],
                    prior=arrays["prior"], brain_mask=arrays["brain_mask"], lesion_mask=arrays["lesion_mask"],
                    lesioned=arrays.get("lesioned"))
