"""Targets, class weights, losses and the three-phase recipe of the hemisphere CNN."""
from __future__ import annotations

import pandas as pd
import pytest
import torch

from cfbrain.models import MultiTaskHemisphereCNN, count_parameters, full_brain_cnn
from cfbrain.train import SeededTransformDataset, TrainConfig, fit, predict, seed_everything
from cfbrain.train.augment import RandomBrainFlip
from cfbrain.train.classification import (ClassWeights, MultiTaskLoss, hemisphere_targets,
                                          inverse_frequency_weights, mtl_outputs, mtl_phases, peer_outputs,
                                          peer_phase, presence_targets, side_targets,
                                          weighted_binary_cross_entropy)
from cfbrain.train.stroke import ClassifierSettings, training_phases

torch.set_num_threads(1)
LABELS = torch.tensor([0, 1, 2, 3])  # none, left, right, both


def scans(n: int, seed: int, layout: str = "hemispheres") -> list[dict]:
    generator = torch.Generator().manual_seed(seed)
    shape = (2, 2, 64, 64) if layout == "hemispheres" else (2, 64, 128)
    return [{"image": torch.rand(shape, generator=generator), "label": torch.tensor(i % 4)} for i in range(n)]


def test_targets():
    assert presence_targets(LABELS).tolist() == [0, 1, 1, 1]
    assert side_targets(LABELS[1:]).tolist() == [0, 1, 2]
    assert hemisphere_targets(LABELS).tolist() == [[0, 0], [0, 1], [1, 0], [1, 1]]  # [right, left]


def test_inverse_frequency_weights():
    weights = inverse_frequency_weights([0, 0, 0, 1], 3)
    assert torch.allclose(weights, torch.tensor([4 / 6, 4 / 2, 0.0]))
    per_class = ClassWeights.from_labels(["none", "none", "left", "left", "left", "both"], flip_augmented=False)
    assert torch.allclose(per_class.presence, torch.tensor([6 / 4, 6 / 8]))
    assert torch.allclose(per_class.side, torch.tensor([4 / 6, 0.0, 4 / 2]))
    # hemispheres [right, left]: none x2 -> 4 absent; left x3 -> 3 absent 3 present; both -> 2 present
    assert torch.allclose(per_class.hemisphere, torch.tensor([12 / 14, 12 / 10]))


def test_weighted_bce_is_a_weighted_mean():
    logits, targets = torch.tensor([0.0, 2.0]), torch.tensor([0.0, 1.0])
    losses = torch.nn.functional.binary_cross_entropy_with_logits(logits, targets, reduction="none")
    weighted = weighted_binary_cross_entropy(logits, targets, torch.tensor([1.0, 3.0]))
    assert torch.isclose(weighted, (losses[0] + 3 * losses[1]) / 4)
    assert torch.isclose(weighted_binary_cross_entropy(logits, targets, None), losses.mean())


def test_multitask_loss_ignores_side_of_negative_scans():
    seed_everything(0)
    model = MultiTaskHemisphereCNN().eval()
    batch = {"image": torch.rand(2, 2, 1, 64, 64), "label": torch.tensor([0, 0])}
    loss, metrics = MultiTaskLoss()(model, batch)
    presence = model(batch["image"])["presence"]
    assert torch.isclose(loss, torch.nn.functional.binary_cross_entropy_with_logits(presence, torch.zeros(2)))
    assert set(metrics) == {"acc4", "presence_acc"}


def test_three_phases_train_the_right_parameters(tmp_path):
    seed_everything(0)
    model = MultiTaskHemisphereCNN()
    train = scans(8, 0)
    phases = mtl_phases([int(s["label"]) for s in train], epochs=(1, 1, 1))
    assert [p.name for p in phases] == ["half_brain", "heads", "finetune"]
    assert [p.lr for p in phases] == [1e-3, 1e-4, 1e-5]
    trunk_head = count_parameters(model.trunk, model.half_brain_head)
    assert [sum(p.numel() for p in phase.trainable(model)) for phase in phases] == [
        trunk_head, count_parameters(model.presence_head, model.side_head), count_parameters(*model.deployed_modules())]

    config = TrainConfig(batch_size=4, weight_decay=5e-5, min_lr=1e-7, checkpoint_every=100, seed=0)
    snapshots = {}
    for name, stop in zip(("half_brain", "heads", "finetune"), (2, 4, None)):  # 2 steps per phase
        fit(model, phases, SeededTransformDataset(train, RandomBrainFlip(), 0), scans(4, 1), config, tmp_path,
            max_steps=stop)
        snapshots[name] = {k: v.clone() for k, v in model.state_dict().items()}
    changed = lambda a, b, prefix: any(not torch.equal(snapshots[a][k], snapshots[b][k])  # noqa: E731
                                       for k in snapshots[a] if k.startswith(prefix))
    assert not changed("half_brain", "heads", "trunk.") and changed("half_brain", "heads", "side_head.")
    assert changed("heads", "finetune", "trunk.") and not changed("heads", "finetune", "half_brain_head.")
    log = pd.read_csv(tmp_path / "train_log.tsv", sep="\t")
    assert log.phase.tolist() == ["half_brain", "heads", "finetune"]
    assert {"train_hemisphere_acc", "val_acc4", "val_presence_acc"} <= set(log.columns)

    outputs = predict(model, scans(5, 2), mtl_outputs, batch_size=2)
    assert outputs["pred"].shape == (5,) and outputs["side_prob"].shape == (5, 3)
    assert ((outputs["pred"] == 0) == (outputs["presence_prob"] < 0.5)).all()


def test_peer_phase_trains_a_full_brain_model(tmp_path):
    seed_everything(0)
    model = full_brain_cnn()
    train = scans(4, 0, layout="full")
    phase = peer_phase([int(s["label"]) for s in train], epochs=1, lr=1e-3)
    result = fit(model, [phase], train, None, TrainConfig(batch_size=2), tmp_path)
    assert result.finished and result.history.train_acc4.notna().all()
    outputs = predict(model, train, peer_outputs, batch_size=4)
    assert outputs["prob"].shape == (4, 4)
    assert outputs["prob"].sum(1) == pytest.approx(1.0, abs=1e-5)


def test_phase_learning_rates_come_from_the_settings():
    labels = [0, 1, 2, 3]
    assert [p.lr for p in training_phases("mtl", labels, ClassifierSettings())] == [1e-3, 1e-4, 1e-5]
    demo = ClassifierSettings.from_mapping({"mtl_epochs": [12, 4, 6], "mtl_lrs": [1e-3, 1e-3, 1e-4], "peer_lr": 3e-4})
    assert [(p.epochs, p.lr) for p in training_phases("mtl", labels, demo)] == [(12, 1e-3), (4, 1e-3), (6, 1e-4)]
    assert [(p.name, p.lr) for p in training_phases("resnet18", labels, demo)] == [("full_brain", 3e-4)]
