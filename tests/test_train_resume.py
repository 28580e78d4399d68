"""Resume after an interruption gives bit-identical weights, EMA and log (CPU).

Run as a script (``python test_train_resume.py OUT_DIR STEP_DELAY``) it trains the toy problem; the
SIGKILL test starts it in a subprocess and kills it between checkpoints.
"""
from __future__ import annotations

import signal
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from cfbrain.train import Phase, SeededTransformDataset, TrainConfig, fit, seed_everything
from cfbrain.train import checkpoint as ckpt

TOTAL_STEPS = 32  # 30 samples in batches of 4 -> 8 steps per epoch; 2 phases x 2 epochs
CONFIG = TrainConfig(batch_size=4, lr=0.05, checkpoint_every=3, seed=7, ema_decay=0.9, epochs=2,
                     select_metric="val_acc", weight_decay=1e-4)


class Toy(nn.Module):
    """Batch norm (buffers), dropout (RNG) and a head that phase 2 trains alone."""

    def __init__(self) -> None:
        super().__init__()
        self.body = nn.Sequential(nn.Linear(6, 16), nn.BatchNorm1d(16), nn.ReLU(), nn.Dropout(0.2))
        self.head = nn.Linear(16, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.body(x))


class ToyData(torch.utils.data.Dataset):
    def __init__(self, n: int, seed: int) -> None:
        generator = torch.Generator().manual_seed(seed)
        self.x = torch.randn(n, 6, generator=generator)
        self.y = (self.x[:, 0] > 0).long() + (self.x[:, 1] > 1).long()

    def __len__(self) -> int:
        return len(self.y)

    def __getitem__(self, index: int) -> dict:
        return {"x": self.x[index], "y": self.y[index]}


def add_noise(sample: dict, generator: np.random.Generator) -> dict:
    noise = torch.from_numpy(generator.normal(0.0, 0.1, 6).astype(np.float32))
    return {**sample, "x": sample["x"] + noise}


class ToyLoss:
    def __init__(self, step_delay: float = 0.0) -> None:
        self.step_delay = step_delay

    def __call__(self, model: nn.Module, batch: dict):
        time.sleep(self.step_delay)
        logits = model(batch["x"])
        return nn.functional.cross_entropy(logits, batch["y"]), {"acc": (logits.argmax(-1) == batch["y"]).float().mean()}


def phases(step_delay: float = 0.0) -> list[Phase]:
    loss = ToyLoss(step_delay)
    return [Phase("all", loss), Phase("head", loss, lr=0.01, trainable=lambda m: m.head.parameters())]


def train_toy(out_dir: Path, *, init_seed: int = 0, step_delay: float = 0.0, max_steps: int | None = None,
              config: TrainConfig = CONFIG):
    seed_everything(init_seed)
    model = Toy()
    train = SeededTransformDataset(ToyData(30, 1), add_noise, seed=3)
    result = fit(model, phases(step_delay), train, ToyData(10, 2), config, out_dir, max_steps=max_steps)
    return model, result


def assert_same_run(out_dir: Path, model: nn.Module, reference: dict) -> None:
    state = model.state_dict()
    assert state.keys() == reference["model"].keys()
    for key, value in state.items():
        assert torch.equal(value, reference["model"][key]), key
    final = ckpt.load(out_dir / "final.pt")
    for key, value in final["ema"].items():
        assert torch.equal(value, reference["ema"][key]), key
    assert (out_dir / "train_log.tsv").read_text() == reference["log"]


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    torch.set_num_threads(1)
    out_dir = tmp_path_factory.mktemp("uninterrupted")
    model, result = train_toy(out_dir)
    assert result.finished and result.global_step == TOTAL_STEPS
    return {"model": {k: v.clone() for k, v in model.state_dict().items()},
            "ema": ckpt.load(out_dir / "final.pt")["ema"], "log": (out_dir / "train_log.tsv").read_text(),
            "best": ckpt.load(out_dir / "best.pt")["model"]}


@pytest.mark.parametrize("stop_at", [5, 16, 17])  # mid-epoch; last step of phase 1; first of phase 2
def test_stop_and_resume_is_bit_identical(tmp_path, reference, stop_at):
    _, stopped = train_toy(tmp_path, max_steps=stop_at)
    assert not stopped.finished and stopped.global_step == stop_at
    assert not (tmp_path / "final.pt").exists()
    model, result = train_toy(tmp_path, init_seed=99)  # other init: the weights must come from the checkpoint
    assert result.finished and result.global_step == TOTAL_STEPS
    assert_same_run(tmp_path, model, reference)
    best = ckpt.load(tmp_path / "best.pt")["model"]
    assert all(torch.equal(best[k], reference["best"][k]) for k in best)


def test_sigkill_then_resume_is_bit_identical(tmp_path, reference):
    checkpoint = tmp_path / "checkpoints" / "last.pt"
    child = subprocess.Popen([sys.executable, __file__, str(tmp_path), "0.05"],
                             stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 60
        while not (checkpoint.exists() and ckpt.load(checkpoint)["position"]["step"] >= 10):
            assert child.poll() is None, child.stderr.read().decode()
            assert time.monotonic() < deadline, "no checkpoint within 60 s"
            time.sleep(0.02)
        time.sleep(0.07)  # land between checkpoints
        child.send_signal(signal.SIGKILL)
    finally:
        child.wait()
    assert child.returncode == -signal.SIGKILL
    killed_at = ckpt.load(checkpoint)["position"]["step"]
    assert 10 <= killed_at < TOTAL_STEPS and not (tmp_path / "final.pt").exists()
    model, result = train_toy(tmp_path, init_seed=99)
    assert result.finished
    assert_same_run(tmp_path, model, reference)
    assert not list(tmp_path.rglob("*.tmp"))


def test_worker_processes_do_not_change_the_result(tmp_path, reference):
    model, _ = train_toy(tmp_path, config=replace(CONFIG, num_workers=2))
    assert_same_run(tmp_path, model, reference)


def test_resume_refuses_another_config(tmp_path):
    torch.set_num_threads(1)
    train_toy(tmp_path, max_steps=3)
    with pytest.raises(ValueError, match="another config"):
        train_toy(tmp_path, config=replace(CONFIG, lr=0.1))


def test_finished_run_reloads_its_weights(tmp_path, reference):
    train_toy(tmp_path)
    model, result = train_toy(tmp_path, init_seed=99)
    assert result.finished and result.global_step == TOTAL_STEPS
    assert all(torch.equal(v, reference["model"][k]) for k, v in model.state_dict().items())


if __name__ == "__main__":
    torch.set_num_threads(1)
    train_toy(Path(sys.argv[1]), step_delay=float(sys.argv[2]))
