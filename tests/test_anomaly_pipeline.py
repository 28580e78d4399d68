"""Chapter 6's workflow helpers: the CT slice adapter and its saliency maps, splits with CT scan labels, the
evaluation slices, run files and Table 6.1's per-seed frame."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from cfbrain.anomaly.ct import ct_saliency, ct_slices, square_planes
from cfbrain.anomaly.methods import AnomalyResult
from cfbrain.anomaly.pipeline import (anomaly_splits, evaluation_slices, grid_choice, healthy_slices, load_run,
                                      save_run, segmentation_row)
from cfbrain.metrics.anomaly import table_frame
from cfbrain.preprocess.ct import CropBox, CTTensor, save_tensor
from cfbrain.preprocess.mri import VolumeSliceSet
from cfbrain.saliency import Saliency, write_saliency


def tensor_file(path: Path, seed: int, shape=(3, 16, 12), lesion: bool = False) -> Path:
    rng = np.random.default_rng(seed)
    image = rng.random(shape, dtype=np.float32)
    brain = np.ones(shape, np.uint8)
    mask = np.zeros(shape, np.uint8)
    mask[1, 4:8, 3:6] = 1
    save_tensor(path, CTTensor(image=image, head_mask=brain, brain_mask=brain, lesion_mask=mask if lesion else None,
                               midline_col=np.full(shape[0], (shape[2] - 1) / 2, np.float32), midline_source="centre",
                               slice_index=np.arange(10, 10 + shape[0]), crop_box=CropBox(0, shape[1], 0, shape[2]),
                               resized_hw=shape[1:], pad=((0, 0), (0, 0)), pixel_mm=(1.0, 1.0),
                               voxel_mm=(5.0, 1.0, 1.0), source_shape=shape, source_affine=np.eye(4),
                               hu_window=(0.0, 100.0)))
    return path


def test_ct_slices_are_square_one_channel_slices_with_positions(tmp_path):
    tensors = {"b": tensor_file(tmp_path / "b.npz", 1, lesion=True), "a": tensor_file(tmp_path / "a.npz", 0)}
    slices, table = ct_slices(tensors, 8)
    assert slices.image.shape == (6, 1, 8, 8) and slices.image.dtype == np.float32
    assert list(slices.scan) == ["a"] * 3 + ["b"] * 3 and list(slices.slice_index) == [0, 1, 2] * 2
    assert (slices.subject == slices.scan).all()
    assert slices.lesion.tolist() == [False] * 4 + [True, False]
    assert table[["scan", "status", "n_slices", "n_lesion_slices"]].values.tolist() == [["a", "kept", 3, 0],
                                                                                       ["b", "kept", 3, 1]]
    # padded to 16 x 16 (2 columns each side), then halved: the image's own square_planes
    expected = square_planes(np.random.default_rng(0).random((3, 16, 12), dtype=np.float32), 8, "bilinear")
    np.testing.assert_allclose(slices.image[:3, 0], np.clip(expected, 0, 1), atol=1e-6)


def test_ct_saliency_follows_scan_and_position(tmp_path):
    paths = {}
    for scan, value in (("a", 0.25), ("b", 0.75)):
        values = np.zeros((3, 16, 12), np.float16)
        values[2] = value
        paths[scan] = write_saliency(tmp_path / f"{scan}.npz", Saliency("counterfactual", values, 0.5))
    maps = ct_saliency(paths, np.array(["b", "a", "b"]), np.array([2, 2, 0]), 8)
    assert maps.shape == (3, 8, 8)
    assert maps[0].max() == np.float32(0.75) and maps[1].max() == np.float32(0.25) and maps[2].max() == 0


def _slices(subjects: list[str], lesion: list[bool]) -> VolumeSliceSet:
    n = len(subjects)
    masks = np.zeros((n, 4, 4), np.uint8)
    masks[np.array(lesion), 1:3, 1:3] = 1
    return VolumeSliceSet("x", ("flair",), ("flair",), np.array(subjects), np.array(subjects), np.arange(n),
                          np.random.default_rng(0).random((n, 1, 4, 4), dtype=np.float32), masks,
                          np.ones((n, 4, 4), np.uint8), np.zeros((n, 4, 4), np.uint8))


def test_ct_positive_scans_are_never_healthy_training_data():
    slices = _slices(["s1", "s1", "s2", "s2", "s3"], [False] * 5)
    split = pd.DataFrame({"scan": ["s1", "s2", "s3"], "split": ["train", "train", "test"], "lesion": [1, 0, 1]})
    splits = anomaly_splits(slices, 0, (0.7, 0.15, 0.15), split)
    assert splits.values.tolist() == [["s1", "train", 1], ["s2", "train", 0], ["s3", "test", 1]]
    assert list(healthy_slices(slices, splits, "train").scan) == ["s2", "s2"]
    groups = evaluation_slices(slices, splits, None)
    assert groups.values.tolist() == [[4, "test_lesion"]]


def test_evaluation_slices_cap_each_group_evenly():
    slices = _slices(["v"] * 5 + ["t"] * 6, [True] * 5 + [True, True, True, False, False, False])
    splits = pd.DataFrame({"subject": ["t", "v"], "split": ["test", "val"], "positive": [0, 0]})
    groups = evaluation_slices(slices, splits, 3)
    assert groups.groupby("group")["index"].apply(list).to_dict() == {
        "test_healthy": [8, 9, 10], "test_lesion": [5, 6, 7], "val_lesion": [0, 2, 4]}


def test_run_file_round_trip_and_scores(tmp_path):
    slices = _slices(["v"] * 2 + ["t"] * 3, [True, True, True, False, False])
    splits = pd.DataFrame({"subject": ["t", "v"], "split": ["test", "val"], "positive": [0, 0]})
    evaluation = evaluation_slices(slices, splits, None)
    index = evaluation["index"].to_numpy()
    result = AnomalyResult(slices.image[index], slices.lesion_mask[index].astype(np.float32), 7)
    save_run(tmp_path / "run.npz", index, result, 500, 90.0)
    loaded_index, loaded = load_run(tmp_path / "run.npz")
    assert (loaded_index == index).all() and loaded.evaluations == 7
    row = segmentation_row(slices, evaluation, loaded_index, loaded)
    assert row["dice"] == 1.0 and row["iou"] == 1.0 and row["healthy_mean_anomaly"] == 0.0
    assert (row["n_val"], row["n_test"], row["n_healthy"]) == (2, 1, 2)


def test_grid_choice_and_table_frame():
    grid = pd.DataFrame({"inversion_depth": [250, 500, 750], "percentile": [90, 90, 80], "dice": [0.1, 0.4, 0.4]})
    assert grid_choice(grid) == (500, 90.0)
    brats = pd.DataFrame({"method": ["difuse"], "seed": [0], "dice": [0.5], "iou": [0.4], "dice_best_on_test": [0.6],
                          "iou_best_on_test": [0.5], "healthy_mean_anomaly": [0.01]})
    ct = pd.DataFrame({"method": ["difuse"], "seed": [0], "kid": [0.02], "kid_features": ["x"]})
    frame = table_frame({"brats": brats, "ct": ct})
    assert frame.columns.tolist() == ["method", "seed", "brats_dice", "brats_iou", "brats_dice_best_on_test",
                                      "brats_iou_best_on_test", "ct_kid"]
