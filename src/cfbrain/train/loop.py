"""The generic training loop: phases, checkpoint and resume after a kill, EMA, mixed precision on CUDA.

Output layout of ``fit`` (``out_dir``):

- ``train_log.tsv``: one row per epoch (see ``history.LEADING_COLUMNS`` + ``train_*`` / ``val_*`` metrics)
- ``training_curves.png``: redrawn at the end of every phase
- ``final.pt``: ``{"model": state_dict, "ema": state_dict or None}`` after the last phase
- ``best.pt``: the same at the best ``select_metric`` epoch of the last phase (only with ``select_metric``)
- ``checkpoints/last.pt`` (or ``checkpoint_dir/last.pt``): the resume point, see ``_Run.checkpoint``

A resumed run (same config, phases and training set size) continues from ``last.pt`` and ends with the
same weights, bit for bit on CPU, as a run that was never interrupted.
"""
from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd
import torch
from torch import nn
from torch.optim import Optimizer
from torch.optim.lr_scheduler import CosineAnnealingLR, LambdaLR, LRScheduler
from torch.optim.swa_utils import AveragedModel
from torch.utils.data import Dataset
from tqdm.auto import tqdm

from cfbrain.train import checkpoint as ckpt
from cfbrain.train.config import Phase, TrainConfig
from cfbrain.train.data import batches_per_epoch, epoch_loader
from cfbrain.train.history import history_frame, plot_history, write_history
from cfbrain.train.runtime import (batch_length, deterministic, rng_state, seed_everything, select_device,
                                   set_rng_state, to_device)

log = logging.getLogger(__name__)

LOG_NAME = "train_log.tsv"
FIGURE_NAME = "training_curves.png"
FINAL_NAME = "final.pt"
BEST_NAME = "best.pt"
CHECKPOINT_NAME = "last.pt"

OptimizerFactory = Callable[[list[nn.Parameter], float, TrainConfig], Optimizer]
SchedulerFactory = Callable[[Optimizer, int, TrainConfig], LRScheduler]


def adam(parameters: list[nn.Parameter], lr: float, config: TrainConfig) -> Optimizer:
    """Adam with ``config.weight_decay`` as L2 penalty (the thesis optimiser)."""
    return torch.optim.Adam(parameters, lr=lr, weight_decay=config.weight_decay)


def cosine_annealing(optimizer: Optimizer, total_steps: int, config: TrainConfig) -> LRScheduler:
    """Cosine decay from the phase's lr to ``config.min_lr`` over the phase, stepped per optimizer step."""
    return CosineAnnealingLR(optimizer, T_max=max(total_steps, 1), eta_min=config.min_lr)


def constant_lr(optimizer: Optimizer, total_steps: int, config: TrainConfig) -> LRScheduler:
    """The phase's lr throughout (``config.min_lr`` unused)."""
    return LambdaLR(optimizer, lambda step: 1.0)


def ema_decay_at(decay: float, updates: int) -> float:
    """EMA decay of the update after ``updates`` earlier ones: ``min(decay, (1 + n) / (10 + n))``.

    The warm-up of the widely used diffusion trainers (diffusers' ``EMAModel``, the guided-diffusion
    family): early updates weigh the current weights heavily, so a short run's EMA is made of recent weights
    rather than the initial ones (a fixed 0.9999 over 24,000 steps keeps 9 % of the step-1 weights).
    """
    return min(decay, (1 + updates) / (10 + updates))


def ema_model(model: nn.Module, decay: float) -> AveragedModel:
    """An exponential moving average of ``model``'s parameters with the warm-up of :func:`ema_decay_at`.

    The first ``update_parameters`` copies the weights; the ``n``-th later one (``n`` = the average's
    ``n_averaged``, saved in its state dict, so a resumed run continues the warm-up) moves every average
    towards the current weights by ``1 - ema_decay_at(decay, n)``.
    """

    @torch.no_grad()
    def update(averages: list[torch.Tensor], current: list[torch.Tensor], updates: torch.Tensor) -> None:
        weight = 1.0 - ema_decay_at(decay, int(updates))
        for average, value in zip(averages, current):
            average.lerp_(value, weight)

    return AveragedModel(model, multi_avg_fn=update)


@dataclass
class FitResult:
    """What ``fit`` leaves behind; ``finished`` is False when it stopped at ``max_steps``."""

    history: pd.DataFrame
    global_step: int
    finished: bool
    final_weights: Path | None
    best_weights: Path | None


@dataclass
class _Position:
    """Where training is; saved in every checkpoint."""

    phase: int = 0
    epoch: int = 0
    batch: int = 0
    step: int = 0
    sums: dict[str, float] = field(default_factory=dict)
    history: list[dict[str, Any]] = field(default_factory=list)
    best: float | None = None
    finished: bool = False


def fit(model: nn.Module, phases: Sequence[Phase], train_dataset: Dataset, val_dataset: Dataset | None,
        config: TrainConfig, out_dir: Path, *, device: str | torch.device | None = None,
        checkpoint_dir: Path | None = None, optimizer_factory: OptimizerFactory = adam,
        scheduler_factory: SchedulerFactory = cosine_annealing, collate_fn: Callable | None = None,
        resume: bool = True, max_steps: int | None = None) -> FitResult:
    """Train ``model`` through ``phases`` in order, resuming from ``last.pt`` if there is one.

    Args:
        model: built (and initialised, e.g. after ``seed_everything``) by the caller; moved to the device
            and left holding the final weights (its ``requires_grad`` flags as they were before).
        phases: at least one; each optimizer and scheduler is created anew at the start of its phase.
        train_dataset, val_dataset: map-style datasets; batches are collated by ``collate_fn`` and moved
            to the device before ``phase.loss_fn(model, batch)`` is called. If the training set has
            ``set_epoch`` (``SeededTransformDataset``), it is called with the epoch index over all phases.
        checkpoint_dir: where ``last.pt`` lives (default ``out_dir/checkpoints``); keep it outside the
            outputs a workflow manager deletes on failure, or resuming has nothing to resume from.
        resume: continue from ``last.pt`` if present; False starts over and overwrites it.
        max_steps: stop (with a checkpoint) once this many optimizer steps are done in total, e.g. to fit
            a cluster time slot; a later call continues.

    Raises:
        ValueError: if the checkpoint was written by a run with different config, phases or data size.
    """
    if not phases:
        raise ValueError("fit needs at least one phase")
    device = select_device(device)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    checkpoint_path = Path(checkpoint_dir or out_dir / "checkpoints") / CHECKPOINT_NAME
    run = _Run(model.to(device), list(phases), train_dataset, val_dataset, config, out_dir, device,
               checkpoint_path, optimizer_factory, scheduler_factory, collate_fn)
    requires_grad = [p.requires_grad for p in model.parameters()]
    try:
        with deterministic(device):
            return run.execute(resume, max_steps)
    finally:
        for parameter, flag in zip(model.parameters(), requires_grad):
            parameter.requires_grad_(flag)


class _Run:
    """State shared by the steps of one ``fit`` call."""

    def __init__(self, model, phases, train_dataset, val_dataset, config, out_dir, device, checkpoint_path,
                 optimizer_factory, scheduler_factory, collate_fn) -> None:
        self.model, self.phases, self.config, self.device = model, phases, config, device
        self.train_dataset, self.val_dataset = train_dataset, val_dataset
        self.out_dir, self.checkpoint_path = out_dir, checkpoint_path
        self.optimizer_factory, self.scheduler_factory, self.collate_fn = (optimizer_factory,
                                                                           scheduler_factory, collate_fn)
        self.amp = config.mixed_precision and device.type == "cuda"
        self.scaler = torch.amp.GradScaler(device.type, enabled=self.amp)
        self.ema = ema_model(model, config.ema_decay) if config.ema_decay is not None else None
        self.steps_per_epoch = batches_per_epoch(len(train_dataset), config.batch_size, config.drop_last)
        if self.steps_per_epoch == 0:
            raise ValueError(f"{len(train_dataset)} training samples make no batch of {config.batch_size}")
        self.position = _Position()
        self.samples_per_second = float("nan")
        self.optimizer: Optimizer | None = None
        self.scheduler: LRScheduler | None = None

    # -- identity and checkpoints -------------------------------------------------------------

    def identity(self) -> dict[str, Any]:
        return {"config": self.config.identity(), "n_train": len(self.train_dataset),
                "phases": [[p.name, *p.resolved(self.config)] for p in self.phases]}

    def checkpoint(self) -> None:
        """Write ``last.pt``: format, identity, position (phase, epoch, batch in epoch, step, running
        epoch sums, history, best value, finished), model, optimizer, scheduler, scaler, EMA and RNG
        states. Optimizer and scheduler are None at a phase boundary (the next phase makes new ones)."""
        p = self.position
        ckpt.atomic_save({
            "format": ckpt.CHECKPOINT_FORMAT, "identity": self.identity(),
            "position": {"phase": p.phase, "epoch": p.epoch, "batch": p.batch, "step": p.step,
                         "sums": p.sums, "history": p.history, "best": p.best, "finished": p.finished},
            "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict() if self.optimizer else None,
            "scheduler": self.scheduler.state_dict() if self.scheduler else None,
            "scaler": self.scaler.state_dict(),
            "ema": self.ema.state_dict() if self.ema else None,
            "rng": rng_state(),
        }, self.checkpoint_path)

    def restore(self) -> dict[str, Any]:
        """Load ``last.pt`` into model, EMA, scaler and position; return it for the optimizer states."""
        state = ckpt.load(self.checkpoint_path)
        if state.get("format") != ckpt.CHECKPOINT_FORMAT or state["identity"] != self.identity():
            raise ValueError(f"{self.checkpoint_path} was written by a run with another config, phases or "
                             "training set; delete it or pass resume=False to start over")
        self.model.load_state_dict(state["model"])
        if self.ema:
            self.ema.load_state_dict(state["ema"])
        self.scaler.load_state_dict(state["scaler"])
        self.position = _Position(**state["position"])
        log.info("resuming from %s at phase %d epoch %d batch %d (step %d)", self.checkpoint_path,
                 self.position.phase, self.position.epoch, self.position.batch, self.position.step)
        return state

    # -- the run ------------------------------------------------------------------------------

    def execute(self, resume: bool, max_steps: int | None) -> FitResult:
        saved = None
        if resume and self.checkpoint_path.exists():
            saved = self.restore()
        else:  # a fresh run seeds every global RNG (dropout and the like draw from them)
            seed_everything(self.config.seed)
        while not self.position.finished:
            phase = self.phases[self.position.phase]
            self.start_phase(phase, saved)
            if saved is not None:
                set_rng_state(saved["rng"])
                saved = None
            if not self.run_phase(phase, max_steps):
                return self.result(finished=False)
            self.end_phase()
        return self.result(finished=True)

    def start_phase(self, phase: Phase, saved: dict[str, Any] | None) -> None:
        epochs, lr = phase.resolved(self.config)
        trainable = _freeze_all_but(self.model, phase.trainable)
        self.optimizer = self.optimizer_factory(trainable, lr, self.config)
        self.scheduler = self.scheduler_factory(self.optimizer, epochs * self.steps_per_epoch, self.config)
        if saved is not None and saved["optimizer"] is not None:
            self.optimizer.load_state_dict(saved["optimizer"])
            self.scheduler.load_state_dict(saved["scheduler"])
        log.info("phase %s: %d epochs x %d steps, lr %.3g, %d trainable parameters", phase.name, epochs,
                 self.steps_per_epoch, lr, sum(p.numel() for p in trainable))

    def run_phase(self, phase: Phase, max_steps: int | None) -> bool:
        """Remaining epochs of ``phase``; False if stopped at ``max_steps``."""
        epochs, _ = phase.resolved(self.config)
        while self.position.epoch < epochs:
            if not self.train_epoch(phase, epochs, max_steps):
                return False
            self.end_epoch(phase, epochs)
        return True

    def epoch_keys(self) -> tuple[int, int, int]:
        return self.config.seed, self.position.phase, self.position.epoch

    def epoch_index(self) -> int:
        """Index of the current epoch counted over all phases (seeds the augmentation)."""
        before = sum(p.resolved(self.config)[0] for p in self.phases[:self.position.phase])
        return before + self.position.epoch

    def train_epoch(self, phase: Phase, epochs: int, max_steps: int | None) -> bool:
        """Optimizer steps for the rest of the current epoch; False if stopped at ``max_steps``."""
        pos, config = self.position, self.config
        if max_steps is not None and pos.step >= max_steps:
            return False
        if hasattr(self.train_dataset, "set_epoch"):
            self.train_dataset.set_epoch(self.epoch_index())
        loader = epoch_loader(self.train_dataset, batch_size=config.batch_size, keys=self.epoch_keys(),
                              start_batch=pos.batch, num_workers=config.num_workers,
                              drop_last=config.drop_last, collate_fn=self.collate_fn,
                              pin_memory=self.device.type == "cuda")
        _train_mode(self.model)
        started, samples = time.perf_counter(), 0
        bar = tqdm(loader, desc=f"{phase.name} {pos.epoch + 1}/{epochs}", initial=pos.batch,
                   total=self.steps_per_epoch, disable=None, leave=False, dynamic_ncols=True)
        for batch in bar:
            lr = self.optimizer.param_groups[0]["lr"]
            n, loss, metrics = self.train_step(phase, batch)
            _accumulate(pos.sums, n, {"loss": loss, "lr": lr, **metrics})
            samples += n
            self.samples_per_second = samples / (time.perf_counter() - started)
            pos.batch += 1
            pos.step += 1
            bar.set_postfix(loss=f"{loss:.4g}", refresh=False)
            if pos.step % config.checkpoint_every == 0:
                self.checkpoint()
            if max_steps is not None and pos.step >= max_steps:
                bar.close()
                self.checkpoint()
                log.info("stopped at step %d (max_steps); rerun to continue", pos.step)
                return False
        return True

    def train_step(self, phase: Phase, batch: Any) -> tuple[int, float, dict[str, float]]:
        batch = to_device(batch, self.device)
        self.optimizer.zero_grad(set_to_none=True)
        with torch.autocast(self.device.type, dtype=torch.float16, enabled=self.amp):
            loss, metrics = phase.loss_fn(self.model, batch)
        value = float(loss.detach())
        if not math.isfinite(value) and not self.amp:
            raise FloatingPointError(f"non-finite training loss {value} at step {self.position.step + 1}")
        self.scaler.scale(loss).backward()
        if self.config.grad_clip_norm is not None:
            self.scaler.unscale_(self.optimizer)
            parameters = [p for group in self.optimizer.param_groups for p in group["params"]]
            nn.utils.clip_grad_norm_(parameters, self.config.grad_clip_norm)
        self.scaler.step(self.optimizer)
        self.scaler.update()
        self.scheduler.step()
        if self.ema:
            self.ema.update_parameters(self.model)
        return batch_length(batch), value, {k: float(v) for k, v in metrics.items()}

    @torch.no_grad()
    def validate(self, phase: Phase) -> dict[str, float]:
        if self.val_dataset is None or len(self.val_dataset) == 0:
            return {}
        loader = epoch_loader(self.val_dataset, batch_size=self.config.batch_size, keys=self.epoch_keys(),
                              shuffle=False, num_workers=self.config.num_workers, collate_fn=self.collate_fn,
                              pin_memory=self.device.type == "cuda")
        self.model.eval()
        sums: dict[str, float] = {}
        for batch in loader:
            batch = to_device(batch, self.device)
            with torch.autocast(self.device.type, dtype=torch.float16, enabled=self.amp):
                loss, metrics = phase.loss_fn(self.model, batch)
            values = {"loss": float(loss), **{k: float(v) for k, v in metrics.items()}}
            _accumulate(sums, batch_length(batch), values)
        return _means(sums)

    def end_epoch(self, phase: Phase, epochs: int) -> None:
        pos = self.position
        started = time.perf_counter()
        train, val = _means(pos.sums), self.validate(phase)
        row = {"phase": phase.name, "epoch": pos.epoch + 1, "step": pos.step,
               "lr": train.pop("lr"), "train_loss": train.pop("loss"),
               "val_loss": val.pop("loss", float("nan")),
               **{f"train_{k}": v for k, v in train.items()}, **{f"val_{k}": v for k, v in val.items()}}
        pos.history.append(row)
        log.info("%s epoch %d/%d step %d: %s (training %.1f samples/s, validation %.1f s)", phase.name,
                 pos.epoch + 1, epochs, pos.step,
                 ", ".join(f"{k} {v:.4g}" for k, v in row.items() if k not in ("phase", "epoch", "step")),
                 self.samples_per_second, time.perf_counter() - started)
        if self.is_last_phase() and self.improves(row):
            pos.best = float(row[self.config.select_metric])
            self.save_weights(self.out_dir / BEST_NAME)
        pos.epoch, pos.batch, pos.sums = pos.epoch + 1, 0, {}
        write_history(pos.history, self.out_dir / LOG_NAME)
        self.checkpoint()

    def is_last_phase(self) -> bool:
        return self.position.phase == len(self.phases) - 1

    def improves(self, row: dict[str, Any]) -> bool:
        metric = self.config.select_metric
        if metric is None:
            return False
        if metric not in row:
            raise KeyError(f"select_metric {metric!r} is not logged; columns are {sorted(row)}")
        value, best = float(row[metric]), self.position.best
        if math.isnan(value):
            return False
        return best is None or (value > best if self.config.select_mode == "max" else value < best)

    def end_phase(self) -> None:
        pos = self.position
        if pos.history:
            plot_history(history_frame(pos.history), self.out_dir / FIGURE_NAME)
        pos.phase, pos.epoch, pos.batch = pos.phase + 1, 0, 0
        pos.finished = pos.phase == len(self.phases)
        self.optimizer = self.scheduler = None
        if pos.finished:
            self.save_weights(self.out_dir / FINAL_NAME)
        self.checkpoint()

    def save_weights(self, path: Path) -> None:
        ckpt.atomic_save({"model": self.model.state_dict(),
                          "ema": self.ema.module.state_dict() if self.ema else None}, path)

    def result(self, finished: bool) -> FitResult:
        best = self.out_dir / BEST_NAME
        return FitResult(history=history_frame(self.position.history), global_step=self.position.step,
                         finished=finished, final_weights=self.out_dir / FINAL_NAME if finished else None,
                         best_weights=best if finished and self.config.select_metric and best.exists() else None)


def _freeze_all_but(model: nn.Module, trainable: Callable[[nn.Module], Any] | None) -> list[nn.Parameter]:
    """Set ``requires_grad`` so only ``trainable(model)`` (all if None) trains; return those parameters."""
    chosen = list(model.parameters()) if trainable is None else list(trainable(model))
    chosen_ids = {id(p) for p in chosen}
    for parameter in model.parameters():
        parameter.requires_grad_(id(parameter) in chosen_ids)
    return list({id(p): p for p in chosen}.values())


def _train_mode(model: nn.Module) -> None:
    """Training mode, except batch norms whose parameters are all frozen keep their running statistics."""
    model.train()
    for module in model.modules():
        if isinstance(module, nn.modules.batchnorm._BatchNorm):
            parameters = list(module.parameters())
            if parameters and not any(p.requires_grad for p in parameters):
                module.eval()


def _accumulate(sums: dict[str, float], n: int, values: dict[str, float]) -> None:
    """Add ``n`` samples' per-sample means to running sums (key ``n`` counts the samples)."""
    sums["n"] = sums.get("n", 0) + n
    for key, value in values.items():
        sums[key] = sums.get(key, 0.0) + n * value


def _means(sums: dict[str, float]) -> dict[str, float]:
    n = sums.get("n", 0)
    return {key: value / n for key, value in sums.items() if key != "n"} if n else {}
