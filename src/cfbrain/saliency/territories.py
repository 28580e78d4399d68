"""Arterial territories in each scan's tensor grid, and the hit score of a saliency map (thesis 003 §4.5,
§4.7.1, §5.6.5).

Territory labels (integers; 0 = no territory): :data:`TERRITORY_LABELS`, six regions, MCA / ACA / PCA
times left / right (patient sides). An atlas is a template-space NIfTI of these labels: for the
synthetic cohort :func:`write_synthetic_territory_atlas` draws it from the cohort's own anatomy (the
territories its lesions were placed in); for real data it is a user's atlas relabelled to this table
(the thesis used Liu et al. 2023).

:func:`territory_map` carries the atlas into one scan's tensor grid: the registration's template -> CT
world affine (FLIRT ``.mat``, template = source), nearest-neighbour resampling onto the loaded CT's grid,
then the crop, slice selection and pad/resize of the image (:meth:`CTTensor.labels_from_source`).

Hit (Zhang et al. 2018, as §5.6.5): the voxel of greatest saliency in the scan lies in one of the
scan's true territories on the true side(s); S = Hits / (Hits + Misses) over the lesion-positive test
scans. The labels table gives ``territory`` as a comma list (e.g. "MCA,PCA") and ``side`` as left,
right or both; every (territory, side) pair of the scan counts as correct.
"""
from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd

from cfbrain.metrics.classification import seeds_markdown_table
from cfbrain.preprocess.ct import CTTensor, load_tensor
from cfbrain.preprocess.npz import read_npz, write_npz
from cfbrain.preprocess.volume import Volume, resample_to_grid, voxel_sizes
from cfbrain.register.flirt_matrix import read_template_to_ct
from cfbrain.register.stage import MATRIX, TEMPLATE_USED

TERRITORY_LABELS: dict[tuple[str, str], int] = {
    ("MCA", "left"): 1, ("MCA", "right"): 2,
    ("ACA", "left"): 3, ("ACA", "right"): 4,
    ("PCA", "left"): 5, ("PCA", "right"): 6,
}
"""(territory, patient side) -> label in atlases and territory maps."""
TERRITORY_MAP_FORMAT = "cfbrain-territory-map/1"


def write_synthetic_territory_atlas(path: Path, resolution_mm: int = 1) -> Path:
    """The synthetic cohort's territories (:func:`cfbrain.synth.anatomy.territory_regions`) as a uint8 label
    NIfTI in template space (MNI RAS mm, the head model's grid), labels :data:`TERRITORY_LABELS`."""
    from cfbrain.synth import anatomy  # loads the MNI152 maps

    model = anatomy.load_head_model(resolution_mm)
    labels = np.zeros(model.labels.shape, dtype=np.uint8)
    for (territory, side), region in anatomy.territory_regions(model).items():
        box = tuple(slice(o, o + n) for o, n in zip(region.offset, region.values.shape))
        labels[box][region.values] = TERRITORY_LABELS[territory, side]
    image = nib.Nifti1Image(labels, model.affine)
    image.set_sform(model.affine, code=4)  # MNI152
    image.set_qform(model.affine, code=4)
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    nib.save(image, str(path))
    return Path(path)


def territory_map(atlas: Path, matrix: Path, template: Path, ct: Path, tensor: CTTensor) -> np.ndarray:
    """The template-space label ``atlas`` in ``tensor``'s grid: uint8 (S, H, W).

    matrix: the scan's ``registration/{scan}/template_to_ct.mat`` (FLIRT convention, template -> CT),
    template: the template it was computed from, ct: the CT NIfTI the tensor was made from (headers only).
    """
    template_to_ct = read_template_to_ct(matrix, template, ct)
    source = nib.load(str(atlas))
    labels = np.asarray(source.dataobj).astype(np.uint8)
    in_ct_world = nib.Nifti1Image(labels, template_to_ct @ source.affine)
    grid = Volume(data=np.broadcast_to(np.float32(0), tensor.source_shape), affine=tensor.source_affine,
                  voxel_mm=voxel_sizes(tensor.source_affine))
    on_ct = resample_to_grid(in_ct_world, grid, order=0).astype(np.uint8)
    return tensor.labels_from_source(on_ct)


def scan_territory_map(atlas: Path, registration_dir: Path, ct: Path, tensor_npz: Path, out_npz: Path) -> Path:
    """The ``territory_map`` rule: ``atlas`` into the grid of ``preproc/{scan}/tensor.npz`` through
    ``registration/{scan}/`` (its matrix and the template it names), written as ``out_npz``."""
    registration_dir = Path(registration_dir)
    template = Path((registration_dir / TEMPLATE_USED).read_text().strip())
    labels = territory_map(atlas, registration_dir / MATRIX, template, ct, load_tensor(tensor_npz))
    return write_territory_map(out_npz, labels)


def write_territory_map(path: Path, labels: np.ndarray) -> Path:
    """``territories/{scan}.npz``: ``labels`` uint8 (S, H, W) (:data:`TERRITORY_LABELS`), ``format``."""
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    write_npz(path, {"labels": np.asarray(labels, dtype=np.uint8), "format": np.str_(TERRITORY_MAP_FORMAT)})
    return Path(path)


def read_territory_map(path: Path) -> np.ndarray:
    """uint8 (S, H, W) territory labels written by :func:`write_territory_map`."""
    return read_npz(path, TERRITORY_MAP_FORMAT)["labels"]


def true_labels(territory: str, side: str) -> set[int]:
    """Labels of a scan's lesion: each territory of the comma list on each side (left, right or both).

    Raises ValueError for an unknown territory or side (a lesion-negative scan has no territories)."""
    sides = ("left", "right") if side == "both" else (side,)
    names = [t.strip().upper() for t in str(territory).split(",") if t.strip()]
    unknown = {(t, s) for t in names for s in sides} - set(TERRITORY_LABELS)
    if not names or unknown:
        raise ValueError(f"territory {territory!r} on side {side!r} is not among {sorted(TERRITORY_LABELS)}")
    return {TERRITORY_LABELS[t, s] for t in names for s in sides}


def peak_label(saliency: np.ndarray, labels: np.ndarray) -> int:
    """The territory label at the voxel of greatest saliency (the first such voxel in (S, H, W) order)."""
    if saliency.shape != labels.shape:
        raise ValueError(f"saliency {saliency.shape} and territory map {labels.shape} differ in shape")
    return int(labels.flat[int(np.argmax(saliency))])


def is_hit(saliency: np.ndarray, labels: np.ndarray, territory: str, side: str) -> bool:
    """Whether the voxel of greatest saliency lies in one of the scan's true territories."""
    return peak_label(saliency, labels) in true_labels(territory, side)


def hit_score(hits: Iterable[bool]) -> float:
    """S = Hits / (Hits + Misses); NaN without any scan."""
    hits = np.asarray(list(hits), dtype=bool)
    return float(hits.mean()) if hits.size else float("nan")


def scan_hits(scans: pd.DataFrame, saliency: dict[str, np.ndarray], territories: dict[str, np.ndarray]
              ) -> pd.DataFrame:
    """Hit of each lesion-positive scan of ``scans`` (columns scan, lesion, side, territory; e.g. the test
    rows of :func:`cfbrain.train.stroke.scan_table`) -> scan, territory, side, peak_label, hit."""
    positive = scans[scans.lesion.astype(int) == 1]
    peaks = [peak_label(saliency[s], territories[s]) for s in positive.scan]
    hits = [p in true_labels(t, s) for p, t, s in zip(peaks, positive.territory, positive.side)]
    return pd.DataFrame({"scan": positive.scan.values, "territory": positive.territory.values,
                         "side": positive.side.values, "peak_label": peaks, "hit": hits})


def hit_score_table(hits: pd.DataFrame) -> tuple[str, pd.DataFrame]:
    """Markdown table of the hit score per method, mean ± standard error over seeds, and the per-seed
    table (method, seed, n_scans, hit_score), from per-scan rows with columns method, seed, hit."""
    per_seed = (hits.groupby(["method", "seed"], sort=True).hit
                .agg(n_scans="size", hit_score=lambda h: hit_score(h)).reset_index())
    table = seeds_markdown_table(per_seed, "method", ["hit_score"], labels={"hit_score": "hit score (%)"})
    return table, per_seed
