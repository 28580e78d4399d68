"""Training ACAT and its peers through the shared loop: saliency maps in the dataset, split and flipped with
their images, one fine-tune phase, limited training data, prediction through the shared inference code."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from cfbrain.models import SALIENCY_MODELS, MultiTaskHemisphereCNN, build_saliency_model
from cfbrain.models.acat import BASELINE_PREFIXES
from cfbrain.models.saliency_peers import SalClassNet
from cfbrain.preprocess.ct import CTTensor, save_tensor
from cfbrain.preprocess.geometry import CropBox
from cfbrain.preprocess.hemispheres import split_hemispheres
from cfbrain.saliency.maps import Saliency, write_saliency
from cfbrain.train import SeededTransformDataset, TrainConfig, fit, predict
from cfbrain.train.augment import RandomBrainFlip
from cfbrain.train.checkpoint import atomic_save
from cfbrain.train.classification import finetune_phase, mtl_outputs
from cfbrain.train.stroke import (SaliencyClassifierSettings, ScanTensors, predict_classifier,
                                  train_saliency_classifier, training_subset)

SHAPE = (2, 64, 128)  # (S, H, W): hemispheres of 64 x 64, the least the 7-block trunk takes


def tensor_file(path: Path, seed: int, midline: float = 60.5) -> Path:
    """A preprocessed scan with random [0, 1] slices and an off-centre midline (column ``midline``)."""
    image = np.random.default_rng(seed).random(SHAPE, dtype=np.float32)
    zeros = np.zeros(SHAPE, np.uint8)
    path.parent.mkdir(parents=True, exist_ok=True)
    save_tensor(path, CTTensor(image=image, head_mask=zeros, brain_mask=zeros, lesion_mask=None,
                               midline_col=np.full(SHAPE[0], midline, np.float32), midline_source="registration",
                               slice_index=np.arange(SHAPE[0]), crop_box=CropBox(0, SHAPE[1], 0, SHAPE[2]),
                               resized_hw=SHAPE[1:], pad=((0, 0), (0, 0)), pixel_mm=(1.0, 1.0),
                               voxel_mm=(5.0, 1.0, 1.0), source_shape=SHAPE, source_affine=np.eye(4),
                               hu_window=(0.0, 100.0)))
    return path


def saliency_file(path: Path, saliency: np.ndarray) -> Path:
    """``saliency/{method}/seed{k}/{scan}.npz`` written by the saliency stage's own writer."""
    return write_saliency(path, Saliency("counterfactual", saliency.astype(np.float16), 0.5))


def test_saliency_is_split_at_the_image_midline(tmp_path):
    """The map is read slice for slice and split into hemispheres exactly like its image."""
    tensor = tensor_file(tmp_path / "a" / "tensor.npz", 0)
    image = np.load(tensor)["image"]
    columns = np.arange(SHAPE[2], dtype=np.float32) / SHAPE[2]
    ramp = (np.broadcast_to(columns, SHAPE) + np.arange(SHAPE[0])[:, None, None]) / SHAPE[0]  # in [0, 1)
    sample = ScanTensors([tensor], [1], "hemispheres", [saliency_file(tmp_path / "a.npz", ramp)])[0]
    expected = split_hemispheres(ramp.astype(np.float16).astype(np.float32), np.full(SHAPE[0], 60.5))
    assert sample["saliency"].shape == sample["image"].shape == (2, SHAPE[0], 64, 64)
    assert sample["saliency"].dtype == torch.float32
    assert np.array_equal(sample["saliency"].numpy(), expected)
    assert np.array_equal(sample["image"].numpy(), split_hemispheres(image, np.full(SHAPE[0], 60.5)))
    with pytest.raises(ValueError, match="does not match"):
        ScanTensors([tensor], [1], "hemispheres", [saliency_file(tmp_path / "b.npz", ramp[:, :, :64])])[0]


def test_the_flip_takes_the_saliency_map_along(tmp_path):
    """A saliency map equal to its image stays equal to it after the flip that swaps the side label."""
    tensor = tensor_file(tmp_path / "a" / "tensor.npz", 1)
    image = np.load(tensor)["image"]
    dataset = ScanTensors([tensor], [1], "hemispheres", [saliency_file(tmp_path / "a.npz", image)])
    sample = dataset[0]
    flipped = RandomBrainFlip(p=1.0)(sample, np.random.default_rng(0))
    assert int(flipped["label"]) == 2  # left -> right
    assert torch.equal(flipped["image"], sample["image"].flip(0))
    assert torch.equal(flipped["saliency"], sample["saliency"].flip(0))
    assert torch.allclose(flipped["saliency"], flipped["image"], atol=1e-3)  # float16 storage


def samples(n: int, seed: int) -> list[dict]:
    generator = torch.Generator().manual_seed(seed)
    shape = (2, SHAPE[0], 64, 64)
    return [{"image": torch.rand(shape, generator=generator), "saliency": torch.rand(shape, generator=generator),
             "label": torch.tensor(i % 4)} for i in range(n)]


@pytest.mark.parametrize("name", SALIENCY_MODELS)
def test_every_saliency_model_trains_one_step(name, tmp_path, one_torch_thread):
    torch.manual_seed(0)
    baseline = MultiTaskHemisphereCNN().state_dict()
    model = build_saliency_model(name, SHAPE[0], baseline)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    train = samples(4, 0)
    phase = finetune_phase([int(s["label"]) for s in train], epochs=1, lr=1e-3)
    config = TrainConfig(batch_size=4, weight_decay=5e-5, min_lr=1e-7, seed=0)
    result = fit(model, [phase], SeededTransformDataset(train, RandomBrainFlip(), 0), None, config, tmp_path)
    assert result.global_step == 1 and np.isfinite(result.history.train_loss).all()
    changed = {k for k, v in model.state_dict().items() if v.is_floating_point() and not torch.equal(v, before[k])}
    assert any(k.startswith("trunk.") for k in changed)
    if name == "salclassnet":  # the added parameters are the first kernels' saliency channel
        assert not torch.equal(model.trunk.blocks[0][0].weight[:, 1:], before[SalClassNet.FIRST_CONV][:, 1:])
    else:
        assert any(not k.startswith(BASELINE_PREFIXES) for k in changed), "the added modules did not train"


def test_training_subset_is_stratified_nested_and_deterministic():
    train = pd.DataFrame({"scan": [f"s{i}" for i in range(40)], "label": [0] * 20 + [1] * 12 + [2] * 8})
    for seed in range(5):
        assert training_subset(train, 0.5, seed).label.value_counts().to_dict() == {0: 10, 1: 6, 2: 4}
    half = training_subset(train, 0.5, seed=3)
    assert len(half) == 20
    assert half.index.is_monotonic_increasing
    assert half.equals(training_subset(train, 0.5, seed=3))
    assert not half.equals(training_subset(train, 0.5, seed=4))
    quarter = training_subset(train, 0.25, seed=3)
    assert len(quarter) == 10 and set(quarter.scan) <= set(half.scan)
    assert training_subset(train, 1.0, seed=3).equals(train)
    assert len(training_subset(train, 0.001, seed=3)) == 1
    with pytest.raises(ValueError, match="fraction"):
        training_subset(train, 0.0, seed=3)


@pytest.fixture
def cohort(tmp_path) -> tuple[pd.DataFrame, dict[str, Path], dict[str, Path]]:
    """Eight scans (train 4, val 2, test 2) with tensors and saliency maps on disk."""
    split = ["train"] * 4 + ["val"] * 2 + ["test"] * 2
    scans = pd.DataFrame({"scan": [f"P{i}_S_E" for i in range(8)], "split": split, "label": [0, 1, 2, 3, 0, 1, 2, 3]})
    tensor_dir = {s: tensor_file(tmp_path / "preproc" / s / "tensor.npz", i).parent for i, s in enumerate(scans.scan)}
    rng = np.random.default_rng(0)
    maps = {s: saliency_file(tmp_path / "saliency" / "acat" / "seed0" / f"{s}.npz", rng.random(SHAPE))
            for s in scans.scan}
    return scans, tensor_dir, maps


def test_train_and_predict_from_the_baseline_weights(cohort, tmp_path, one_torch_thread):
    scans, tensor_dir, maps = cohort
    torch.manual_seed(0)
    baseline = atomic_save({"model": MultiTaskHemisphereCNN().state_dict(), "ema": None}, tmp_path / "mtl.pt")
    settings = SaliencyClassifierSettings(epochs=1, lr=1e-4, batch_size=2)
    weights = train_saliency_classifier("acat", scans, tensor_dir, maps, settings, 0, tmp_path / "acat",
                                        tmp_path / "checkpoints", baseline, train_fraction=0.5)
    log = pd.read_csv(tmp_path / "acat" / "train_log.tsv", sep="\t")
    assert weights.exists() and log.phase.tolist() == ["finetune"] and log.step.tolist() == [1]  # 2 scans
    table = predict_classifier("acat", weights, scans, tensor_dir, maps)
    assert table.scan.tolist() == scans.scan[6:].tolist()
    assert {"pred", "presence_prob", "side_prob_0"} <= set(table.columns)
    with pytest.raises(ValueError, match="saliency maps are needed"):
        predict_classifier("acat", weights, scans, tensor_dir)


def test_inference_passes_the_saliency_map(one_torch_thread):
    torch.manual_seed(0)
    model = build_saliency_model("acat", SHAPE[0]).eval()
    data = samples(3, 1)
    outputs = predict(model, data, mtl_outputs, batch_size=2)
    batch = {k: torch.stack([s[k] for s in data]) for k in data[0]}
    with torch.no_grad():
        direct = torch.sigmoid(model(batch["image"], batch["saliency"])["presence"])
    assert np.allclose(outputs["presence_prob"], direct.numpy(), atol=1e-6)


def test_the_model_starts_from_the_baseline_weights(cohort, tmp_path, one_torch_thread):
    scans, tensor_dir, maps = cohort
    torch.manual_seed(1)  # not the run seed, which would draw the same trunk
    state = MultiTaskHemisphereCNN().state_dict()
    baseline = atomic_save({"model": state, "ema": None}, tmp_path / "mtl.pt")
    untrained = SaliencyClassifierSettings(epochs=0, batch_size=2)
    for run, weights in (("from_baseline", baseline), ("from_scratch", None)):
        final = train_saliency_classifier("smic", scans, tensor_dir, maps, untrained, 0, tmp_path / run,
                                          tmp_path / "checkpoints" / run, weights)
        trunk = torch.load(final, weights_only=True)["model"]["trunk.blocks.3.0.weight"]
        assert torch.equal(trunk, state["trunk.blocks.3.0.weight"]) == (weights is not None)
