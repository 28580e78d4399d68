"""The lesion segmenter that scores counterfactuals (thesis 000 §4.1: does an edit hold the lesion it was asked for?).

A MONAI ``UNet`` (2-D, residual units) with two output classes (background, lesion), trained with
Dice + cross-entropy (the fixed loss of nnU-Net) on the training split of the real slices. Input: image
float32 (B, 1, H, W) in [0, 1] (the slices' on-disk range; counterfactuals come back from [-1, 1] through
:func:`cfbrain.preprocess.intensity.diffusion_to_unit`). H and W must be divisible by the product of
``strides``.

The thesis used nnU-Net; to score with nnU-Net instead, see :mod:`cfbrain.mededit.nnunet`
(export the counterfactuals, predict with ``nnUNetv2_predict``, read the masks back).
"""
from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from monai.losses import DiceCELoss
from monai.networks.nets import UNet
from torch import nn

from cfbrain.train.checkpoint import load_weights
from cfbrain.train.config import Phase
from cfbrain.settings import from_mapping


@dataclass(frozen=True)
class SegmenterConfig:
    """MONAI ``UNet`` arguments of the same names (``dropout`` applies inside the residual units)."""

    channels: tuple[int, ...] = (16, 32, 64, 128, 256)
    strides: tuple[int, ...] = (2, 2, 2, 2)
    num_res_units: int = 2
    dropout: float = 0.0

    @classmethod
    def from_mapping(cls, values: Mapping) -> SegmenterConfig:
        """From a config section (YAML lists become tuples); unknown keys are an error."""
        return from_mapping(cls, values, "segmenter")


def lesion_segmenter(config: SegmenterConfig = SegmenterConfig()) -> UNet:
    """(B, 1, H, W) image in [0, 1] -> (B, 2, H, W) logits (background, lesion)."""
    return UNet(spatial_dims=2, in_channels=1, out_channels=2, channels=config.channels,
                strides=config.strides, num_res_units=config.num_res_units, dropout=config.dropout)


def hard_dice(predicted: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Mean over the batch of per-image Dice of {0, 1} masks (B, ...); 1 where both are empty."""
    predicted, target = predicted.flatten(1).float(), target.flatten(1).float()
    overlap = 2 * (predicted * target).sum(1)
    total = predicted.sum(1) + target.sum(1)
    return torch.where(total > 0, overlap / total.clamp(min=1), torch.ones_like(total)).mean()


class SegmentationLoss:
    """Dice + cross-entropy (MONAI ``DiceCELoss``, softmax over the two classes) for
    :func:`cfbrain.train.fit`. Batch: ``image`` (B, 1, H, W) in [0, 1], ``lesion_mask`` (B, 1, H, W) in
    {0, 1}. Metric ``dice``: per-image Dice of the argmax mask, averaged."""

    def __init__(self) -> None:
        self.loss = DiceCELoss(to_onehot_y=True, softmax=True)

    def __call__(self, model: nn.Module, batch: Mapping[str, torch.Tensor]) -> tuple[torch.Tensor, dict]:
        logits = model(batch["image"]).float()
        target = (batch["lesion_mask"] > 0).long()
        loss = self.loss(logits, target)
        return loss, {"dice": hard_dice(logits.argmax(1, keepdim=True), target).detach()}


def segmenter_phase(*, epochs: int | None = None, lr: float | None = None) -> Phase:
    """The single training phase of the segmenter."""
    return Phase("segmenter", SegmentationLoss(), epochs=epochs, lr=lr)


def load_segmenter(path: str | Path, config: SegmenterConfig = SegmenterConfig(), *, use_ema: bool = False,
                   device: str | torch.device = "cpu") -> UNet:
    """A trained segmenter (``final.pt``/``best.pt`` of :func:`cfbrain.train.fit`) in eval mode on ``device``."""
    return load_weights(lesion_segmenter(config), Path(path), use_ema=use_ema).to(device).eval()


@torch.no_grad()
def segment(model: nn.Module, images: np.ndarray | torch.Tensor, *, batch_size: int = 32) -> np.ndarray:
    """Lesion masks uint8 (N, H, W) in {0, 1} of images (N, H, W) or (N, 1, H, W) in [0, 1], computed in
    batches on the model's device (argmax of the two classes)."""
    device = next(model.parameters()).device
    tensor = torch.as_tensor(np.asarray(images, dtype=np.float32) if isinstance(images, np.ndarray) else images)
    if tensor.ndim == 3:
        tensor = tensor[:, None]
    masks = []
    model.eval()
    for start in range(0, tensor.shape[0], batch_size):
        logits = model(tensor[start:start + batch_size].to(device, torch.float32))
        masks.append(logits.argmax(1).to(torch.uint8).cpu())
    if not masks:
        return np.zeros((0, *tensor.shape[-2:]), np.uint8)
    return torch.cat(masks).numpy()
