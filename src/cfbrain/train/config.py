"""Training configuration: run-wide hyperparameters and the phases a run goes through."""
from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass
from typing import Any

import torch
from torch import nn

LossFn = Callable[[nn.Module, Any], tuple[torch.Tensor, dict[str, float | torch.Tensor]]]
"""(model, batch on the device) -> (scalar loss, per-sample-mean metrics of the batch)."""


@dataclass(frozen=True)
class TrainConfig:
    """Hyperparameters of one run; phases may override ``epochs`` and ``lr``.

    Attributes:
        epochs: epochs per phase unless the phase sets its own.
        batch_size: samples per optimizer step.
        lr: initial learning rate unless the phase sets its own.
        weight_decay: passed to the optimizer (L2 penalty for Adam).
        min_lr: final learning rate of the cosine schedule.
        checkpoint_every: write ``last.pt`` every this many optimizer steps (also after every epoch).
        seed: seeds the RNGs, the data order and the augmentation.
        num_workers: DataLoader worker processes (0: load in the training process).
        drop_last: drop a last, smaller batch of each epoch.
        mixed_precision: float16 autocast + GradScaler; only ever active on CUDA.
        ema_decay: keep an exponential moving average of the weights with this decay, warmed up from the
            first steps (``loop.ema_decay_at``; None: no EMA).
        grad_clip_norm: clip the gradient norm to this value (None: no clipping).
        select_metric: history column (e.g. ``val_acc4``) whose best epoch of the last phase is saved
            as ``best.pt`` (None: no selection).
        select_mode: ``max`` or ``min`` for ``select_metric``.
    """

    epochs: int = 1
    batch_size: int = 8
    lr: float = 1e-3
    weight_decay: float = 0.0
    min_lr: float = 0.0
    checkpoint_every: int = 100
    seed: int = 0
    num_workers: int = 0
    drop_last: bool = False
    mixed_precision: bool = True
    ema_decay: float | None = None
    grad_clip_norm: float | None = None
    select_metric: str | None = None
    select_mode: str = "max"

    def __post_init__(self) -> None:
        if self.batch_size < 1 or self.epochs < 0 or self.checkpoint_every < 1:
            raise ValueError("batch_size and checkpoint_every must be >= 1 and epochs >= 0")
        if self.select_mode not in ("max", "min"):
            raise ValueError(f"select_mode must be 'max' or 'min', got {self.select_mode!r}")

    def identity(self) -> dict[str, Any]:
        """The fields a resumed run must share with the run that wrote the checkpoint (all but those
        that cannot change the result)."""
        fields = asdict(self)
        for free in ("num_workers", "checkpoint_every"):
            fields.pop(free)
        return fields


@dataclass(frozen=True)
class Phase:
    """One stage of training with its own loss, trainable parameters and learning rate.

    Attributes:
        name: label in the log (``half_brain``, ``heads``...).
        loss_fn: see ``LossFn``.
        epochs, lr: override ``TrainConfig.epochs`` / ``TrainConfig.lr``.
        trainable: model -> the parameters this phase optimizes (None: all). Every other parameter is
            frozen, and batch-norm layers whose parameters are all frozen keep their running statistics.
    """

    name: str
    loss_fn: LossFn
    epochs: int | None = None
    lr: float | None = None
    trainable: Callable[[nn.Module], Iterable[nn.Parameter]] | None = None

    def resolved(self, config: TrainConfig) -> tuple[int, float]:
        """(epochs, lr) of this phase under ``config``."""
        return (self.epochs if self.epochs is not None else config.epochs,
                self.lr if self.lr is not None else config.lr)
