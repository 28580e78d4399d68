"""Training of the spatial-latent slice autoencoder of thesis 003 §5.6.2 (:mod:`cfbrain.models.autoencoder`).

Data: every slice of the training split's scans (``preproc/{scan}/tensor.npz``, (S, H, W) in [0, 1]);
validation: every slice of the val split's scans. A batch holds ``batch_size`` scans, i.e.
``batch_size * S`` slices, so each file is read once per epoch. Loss: pixel MSE
(:class:`~cfbrain.models.features.ReconstructionLoss`); ``val_loss`` in ``train_log.tsv`` is the mean
validation reconstruction MSE of each epoch. Optimiser: Adam at 1e-4 (method notes); the cosine schedule
of the shared loop decays to ``min_lr``, by default the same rate (a constant 1e-4).
"""
from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from torch.utils.data import Dataset, default_collate

from cfbrain.models.autoencoder import SpatialAutoencoder, SpatialAutoencoderConfig
from cfbrain.models.features import ReconstructionLoss
from cfbrain.preprocess.ct import load_tensor
from cfbrain.settings import from_mapping
from cfbrain.train.config import Phase, TrainConfig
from cfbrain.train.loop import FINAL_NAME, fit
from cfbrain.train.runtime import seed_everything

log = logging.getLogger(__name__)
PHASE_NAME = "autoencoder"


@dataclass(frozen=True)
class AutoencoderTraining:
    """Training settings of the ``autoencoder`` config section; ``batch_size`` counts scans (of S
    slices each). The thesis gives no epoch count for the autoencoder; lr is the authors' Adam 1e-4."""

    epochs: int = 50
    lr: float = 1e-4
    min_lr: float = 1e-4
    batch_size: int = 2
    weight_decay: float = 0.0
    checkpoint_every: int = 50

    @classmethod
    def from_mapping(cls, values: dict) -> AutoencoderTraining:
        return from_mapping(cls, values, "autoencoder training")


class ScanSlices(Dataset):
    """One preprocessed scan per sample: {"image": float32 (S, H, W) in [0, 1]}."""

    def __init__(self, tensor_files: Sequence[Path]) -> None:
        self.files = [Path(f) for f in tensor_files]

    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        image = np.ascontiguousarray(load_tensor(self.files[index]).image, dtype=np.float32)
        return {"image": torch.from_numpy(image)}


def collate_slices(samples: list[dict[str, torch.Tensor]]) -> dict[str, torch.Tensor]:
    """B scans of (S, H, W) -> {"image": (B * S, 1, H, W)}: the slices of every scan, scan by scan."""
    image = default_collate(samples)["image"]
    return {"image": image.reshape(-1, 1, *image.shape[-2:])}


def train_autoencoder(split: pd.DataFrame, tensor_files: dict[str, Path], architecture: SpatialAutoencoderConfig,
                      settings: AutoencoderTraining, seed: int, out_dir: Path, checkpoint_dir: Path,
                      device: str | torch.device | None = None) -> Path:
    """Train the autoencoder on the slices of the ``train`` scans of ``split`` (columns scan, split),
    validating on the ``val`` scans' slices.

    tensor_files: scan -> its ``tensor.npz``. Writes ``out_dir/final.pt``, ``train_log.tsv`` (``val_loss`` =
    validation reconstruction MSE per epoch) and ``training_curves.png``; resumes from
    ``checkpoint_dir/last.pt`` after a kill. Returns the path of the final weights.
    """
    train, val = (split.scan[split.split == name].tolist() for name in ("train", "val"))
    if not train:
        raise ValueError("the training split is empty")
    seed_everything(seed)
    model = SpatialAutoencoder(architecture)
    config = TrainConfig(epochs=settings.epochs, batch_size=settings.batch_size, lr=settings.lr,
                         min_lr=settings.min_lr, weight_decay=settings.weight_decay,
                         checkpoint_every=settings.checkpoint_every, seed=seed)
    log.info("autoencoder: %d training and %d validation scans, %d epochs", len(train), len(val), settings.epochs)
    fit(model, [Phase(PHASE_NAME, ReconstructionLoss())], ScanSlices([tensor_files[s] for s in train]),
        ScanSlices([tensor_files[s] for s in val]) if val else None, config, Path(out_dir),
        device=device, checkpoint_dir=Path(checkpoint_dir), collate_fn=collate_slices)
    return Path(out_dir) / FINAL_NAME


@torch.no_grad()
def reconstruction_figure(autoencoder: SpatialAutoencoder, tensor_files: Sequence[Path], path: Path,
                          titles: Sequence[str] | None = None) -> Path:
    """PNG of input / reconstruction pairs: the middle slice of each scan (columns), input on the top
    row, reconstruction (clipped to [0, 1]) below with its MSE. Radiological orientation."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    autoencoder.eval()
    device = next(autoencoder.parameters()).device
    figure, axes = plt.subplots(2, len(tensor_files), figsize=(2.4 * len(tensor_files), 5.2), squeeze=False)
    for col, file in enumerate(tensor_files):
        image = load_tensor(file).image
        middle = torch.from_numpy(np.ascontiguousarray(image[image.shape[0] // 2], dtype=np.float32))
        reconstruction = autoencoder(middle[None, None].to(device))[0, 0].cpu()
        mse = float(torch.mean((reconstruction - middle) ** 2))
        for row, (shown, label) in enumerate(((middle, "input"), (reconstruction.clamp(0, 1), f"MSE {mse:.2e}"))):
            axes[row, col].imshow(shown.numpy(), cmap="gray", vmin=0, vmax=1)
            axes[row, col].set_title(label if titles is None or row else f"{titles[col]}\n{label}", fontsize=7)
            axes[row, col].axis("off")
    figure.suptitle("autoencoder: input (top) and reconstruction (bottom), middle slice")
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)
    return Path(path)
