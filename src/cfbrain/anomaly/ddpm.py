"""The healthy-only diffusion model of Dif-fuse (thesis 003 §6.5.3), trained with the shared resumable loop.

Network: the ``"unconditional"`` denoiser of :mod:`cfbrain.models.diffusion_unet` with C input and C output
channels (one per contrast; thesis: :data:`~cfbrain.models.diffusion_unet.DIFFUSE_UNET` at 256², 4
contrasts, 138,288,772 parameters). Loss: ε-prediction MSE (:class:`~cfbrain.models.diffusion_unet.
DenoisingLoss`), T = 1000, linear β 1e-4…0.02; AdamW (β 0.9/0.999, weight decay 0.05) at a constant
1e-4; EMA 0.99 (the samplers use the EMA weights); batch 10 for 60,000 iterations.

Why not the improved-DDPM hybrid loss with learned variance the text cites (Nichol & Dhariwal 2021): the
network the thesis counts is the fixed-variance one. A learned variance doubles the output channels (ε
and the log-variance interpolation v), which gives 138,293,384 parameters with scale-shift conditioning;
the thesis's 138,288,772 is exactly the network with as many outputs as inputs, and the method notes
record ε-prediction with fixed variance in the authors' code. With a fixed variance the improved-DDPM
code's loss is L_simple, which is what is trained here; Algorithm 2's σ_t is the fixed DDPM posterior std.

Iterations: the loop counts epochs, so training runs ``ceil(iterations / batches per epoch)`` epochs
(at least ``iterations`` optimizer steps).
"""
from __future__ import annotations

import logging
import math
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn
from torch.optim import AdamW, Optimizer

from cfbrain.anomaly.data import SliceImages, flip_sample
from cfbrain.models.diffusion_unet import DiffusionUNetConfig, diffusion_phase, diffusion_unet
from cfbrain.preprocess.mri import VolumeSliceSet
from cfbrain.settings import from_mapping
from cfbrain.train import SeededTransformDataset, TrainConfig, fit, seed_everything
from cfbrain.train.checkpoint import load_weights
from cfbrain.train.data import batches_per_epoch
from cfbrain.train.loop import constant_lr

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class HealthyDDPMSettings:
    """The ``healthy_ddpm`` config section; defaults are §6.5.3's values."""

    iterations: int = 60_000
    batch_size: int = 10
    lr: float = 1e-4
    weight_decay: float = 0.05
    ema_decay: float = 0.99
    seed: int = 0
    checkpoint_every: int = 1000
    mixed_precision: bool = True

    @classmethod
    def from_mapping(cls, values: Mapping) -> HealthyDDPMSettings:
        return from_mapping(cls, values, "healthy_ddpm")


def adamw(parameters: list[nn.Parameter], lr: float, config: TrainConfig) -> Optimizer:
    """AdamW, β = (0.9, 0.999), decoupled weight decay ``config.weight_decay`` (§6.5.3)."""
    return AdamW(parameters, lr=lr, betas=(0.9, 0.999), weight_decay=config.weight_decay)


def train_config(settings: HealthyDDPMSettings, n_train: int) -> TrainConfig:
    """The loop's config: enough epochs for ``settings.iterations`` optimizer steps (module docstring)."""
    steps = batches_per_epoch(n_train, settings.batch_size, False)
    if steps == 0:
        raise ValueError("no healthy training slice")
    return TrainConfig(epochs=math.ceil(settings.iterations / steps), batch_size=settings.batch_size, lr=settings.lr,
                       weight_decay=settings.weight_decay, seed=settings.seed, ema_decay=settings.ema_decay,
                       checkpoint_every=settings.checkpoint_every, mixed_precision=settings.mixed_precision)


def train_healthy_ddpm(healthy: VolumeSliceSet, validation: VolumeSliceSet | None, unet: DiffusionUNetConfig,
                       settings: HealthyDDPMSettings, out_dir: Path, checkpoint_dir: Path) -> Path:
    """Train the denoiser on ``healthy`` slices (training split, no lesion; left-right flips), validation
    loss on ``validation``; resumable from ``checkpoint_dir``. Returns ``out_dir/final.pt``."""
    config = train_config(settings, len(healthy.scan))
    seed_everything(config.seed)
    model = diffusion_unet("unconditional", unet, image_channels=healthy.image.shape[1])
    log.info("healthy DDPM: %d parameters, %d training slices, %d epochs", sum(p.numel() for p in model.parameters()),
             len(healthy.scan), config.epochs)
    train = SeededTransformDataset(SliceImages(healthy), flip_sample, config.seed)
    val = SliceImages(validation) if validation is not None and len(validation.scan) else None
    fit(model, [diffusion_phase("unconditional")], train, val, config, Path(out_dir), checkpoint_dir=Path(checkpoint_dir),
        optimizer_factory=adamw, scheduler_factory=constant_lr)
    return Path(out_dir) / "final.pt"


def load_healthy_ddpm(path: str | Path, unet: DiffusionUNetConfig, channels: int,
                      device: str | torch.device = "cpu") -> nn.Module:
    """The trained denoiser (EMA weights) as ``eps_model(x_t, t, cond=None)`` in eval mode on ``device``."""
    model = load_weights(diffusion_unet("unconditional", unet, image_channels=channels), Path(path), use_ema=True)
    return model.to(device).eval()
