"""Training loop pieces: device choice, data order, freezing, outputs on disk, inference order."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch
from torch import nn

from cfbrain.train import Phase, SeededTransformDataset, TrainConfig, fit, predict, select_device
from cfbrain.train import checkpoint as ckpt
from cfbrain.train.data import EpochPermutationSampler, batches_per_epoch
from cfbrain.train.loop import ema_decay_at, ema_model
from cfbrain.train.history import LEADING_COLUMNS
from cfbrain.train.runtime import batch_length, derived_seed, to_device

torch.set_num_threads(1)


class Frozen(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.body = nn.Sequential(nn.Linear(4, 8), nn.BatchNorm1d(8), nn.ReLU())
        self.head = nn.Linear(8, 2)

    def forward(self, x):
        return self.head(self.body(x))


def pairs(n: int = 12, seed: int = 0) -> list[dict]:
    generator = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 4, generator=generator)
    return [{"x": x[i], "y": (x[i, 0] > 0).long()} for i in range(n)]


def loss_fn(model, batch):
    logits = model(batch["x"])
    return nn.functional.cross_entropy(logits, batch["y"]), {"acc": (logits.argmax(-1) == batch["y"]).float().mean()}


def test_select_device():
    assert select_device("cpu") == torch.device("cpu")
    assert select_device().type == ("cuda" if torch.cuda.is_available() else "cpu")
    if not torch.cuda.is_available():
        with pytest.raises(RuntimeError, match="CUDA"):
            select_device("cuda")


def test_epoch_order_is_seeded_and_skips_consumed_samples():
    first = list(EpochPermutationSampler(10, (1, 0, 3)))
    assert sorted(first) == list(range(10))
    assert first == list(EpochPermutationSampler(10, (1, 0, 3)))
    assert first != list(EpochPermutationSampler(10, (1, 0, 4)))
    assert list(EpochPermutationSampler(10, (1, 0, 3), start=4)) == first[4:]
    assert derived_seed(1, 0, 3) == derived_seed(1, 0, 3) != derived_seed(1, 0, 4)
    assert batches_per_epoch(10, 4, drop_last=False) == 3 and batches_per_epoch(10, 4, drop_last=True) == 2


def test_seeded_transform_depends_on_seed_epoch_and_index_only():
    data = SeededTransformDataset(list(range(6)), lambda sample, rng: sample + rng.random(), seed=5)
    epoch0 = [data[i] for i in range(6)]
    assert [data[i] for i in reversed(range(6))] == epoch0[::-1]
    data.set_epoch(1)
    assert [data[i] for i in range(6)] != epoch0
    data.set_epoch(0)
    assert [data[i] for i in range(6)] == epoch0


def test_batch_helpers():
    batch = {"id": ["a", "b"], "x": torch.zeros(2, 3), "nested": [torch.ones(2)]}
    assert batch_length(batch) == 2
    moved = to_device(batch, torch.device("cpu"))
    assert moved["id"] == ["a", "b"] and torch.equal(moved["nested"][0], torch.ones(2))


def test_frozen_phase_keeps_weights_and_batch_norm_statistics(tmp_path):
    torch.manual_seed(0)
    model = Frozen()
    before = {k: v.clone() for k, v in model.body.state_dict().items()}
    head_before = model.head.weight.detach().clone()
    phase = Phase("head", loss_fn, trainable=lambda m: m.head.parameters())
    fit(model, [phase], pairs(), None, TrainConfig(batch_size=4, epochs=2), tmp_path)
    assert all(torch.equal(v, before[k]) for k, v in model.body.state_dict().items())
    assert not torch.equal(model.head.weight, head_before)
    assert all(p.requires_grad for p in model.parameters())


def test_outputs_on_disk(tmp_path):
    torch.manual_seed(0)
    config = TrainConfig(batch_size=5, epochs=2, checkpoint_every=2, lr=0.01, select_metric="val_loss",
                         select_mode="min")
    phases = [Phase("first", loss_fn), Phase("second", loss_fn, epochs=1, lr=1e-3)]
    result = fit(Frozen(), phases, pairs(12), pairs(6, seed=1), config, tmp_path,
                 checkpoint_dir=tmp_path / "elsewhere")
    log = pd.read_csv(tmp_path / "train_log.tsv", sep="\t")
    assert list(log.columns) == [*LEADING_COLUMNS, "train_acc", "val_acc"]
    assert log.phase.tolist() == ["first", "first", "second"] and log.epoch.tolist() == [1, 2, 1]
    assert log.step.tolist() == [3, 6, 9] and result.global_step == 9
    assert (log.lr.iloc[:2] < 0.01).all() and log.lr.iloc[2] < 1e-3
    assert log.val_loss.notna().all()
    assert (tmp_path / "training_curves.png").stat().st_size > 0
    state = ckpt.load(tmp_path / "elsewhere" / "last.pt")
    assert {"format", "identity", "position", "model", "optimizer", "scheduler", "scaler", "ema",
            "rng"} <= set(state)
    assert state["position"]["finished"] and state["position"]["step"] == 9
    final = ckpt.load(result.final_weights)
    assert final["ema"] is None and final["model"].keys() == Frozen().state_dict().keys()
    assert result.best_weights == tmp_path / "best.pt" and result.best_weights.exists()
    assert not list(tmp_path.rglob("*.tmp"))


def test_ema_weights_trail_the_model(tmp_path):
    torch.manual_seed(0)
    model = Frozen()
    fit(model, [Phase("all", loss_fn)], pairs(), None, TrainConfig(batch_size=4, epochs=3, lr=0.1,
                                                                    ema_decay=0.5), tmp_path)
    weights = ckpt.load(tmp_path / "final.pt")
    assert not torch.equal(weights["ema"]["head.weight"], weights["model"]["head.weight"])
    restored = ckpt.load_weights(Frozen(), tmp_path / "final.pt", use_ema=True)
    assert torch.equal(restored.head.weight, weights["ema"]["head.weight"])


def test_ema_warm_up_makes_a_short_run_average_its_recent_weights():
    """A parameter is 1 for the first half of 2,000 updates and 0 after: the EMA's value is the weight the
    first half keeps. With the paper configs' decay 0.9999 and no warm-up it would be 0.9999 ** 1000 = 0.90."""
    parameter = torch.nn.Parameter(torch.ones(1))
    holder = torch.nn.Module()
    holder.parameter = parameter
    ema = ema_model(holder, 0.9999)
    for update in range(2000):
        with torch.no_grad():
            parameter.fill_(1.0 if update < 1000 else 0.0)
        ema.update_parameters(holder)
    assert float(ema.module.parameter.detach()) < 0.01
    assert ema_decay_at(0.9999, 0) == pytest.approx(0.1) and ema_decay_at(0.9999, 10**6) == 0.9999
    assert ema_decay_at(0.5, 100) == 0.5


def test_non_finite_loss_fails_loudly(tmp_path):
    def nan_loss(model, batch):
        return model(batch["x"]).sum() * float("nan"), {}

    with pytest.raises(FloatingPointError):
        fit(Frozen(), [Phase("nan", nan_loss)], pairs(), None, TrainConfig(batch_size=4), tmp_path)


def test_predict_keeps_dataset_order():
    torch.manual_seed(0)
    model = Frozen()
    data = pairs(7)
    outputs = predict(model, data, lambda m, b: {"y": b["y"], "logit": m(b["x"])}, batch_size=3)
    assert outputs["logit"].shape == (7, 2) and outputs["logit"].dtype == np.float32
    assert outputs["y"].tolist() == [int(s["y"]) for s in data]
    model.eval()
    with torch.no_grad():
        expected = model(torch.stack([s["x"] for s in data])).numpy()
    np.testing.assert_allclose(outputs["logit"], expected, rtol=1e-5, atol=1e-6)
