"""Saliency masks on MRI (thesis 003 §6.5.2 on BraTS-like data): a slice classifier (lesion vs healthy) and
chapter 5's adversarial latent counterfactual search on it.

Classifier: MONAI ResNet-18 as the chapter-4/5 peer (:func:`cfbrain.models.peers.resnet_peer`: 7x7 stride-2
stem, no bias in the down-sampling shortcuts) with one input channel per contrast and one logit
(P(lesion) = sigmoid), trained with class-weighted binary cross-entropy on every training slice.

Saliency: :func:`cfbrain.saliency.methods.counterfactual_saliency` unchanged. It explains a map
f: (S, H, W) -> logit and encodes each of the S planes with the single-channel
:class:`~cfbrain.models.autoencoder.SpatialAutoencoder`; here the S planes are one slice's C contrasts
(:class:`ContrastSlice` stacks them back for the classifier), the autoencoder is trained on every
contrast plane of the training slices, and the (C, H, W) map is averaged over contrasts into one (H, W) map
in [0, 1].
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from monai.networks.nets import resnet18
from torch import nn

from cfbrain.anomaly.data import SliceImages, SlicePlanes, flip_sample
from cfbrain.models.autoencoder import SpatialAutoencoder, SpatialAutoencoderConfig
from cfbrain.models.features import autoencoder_phase
from cfbrain.models.peers import RESNET_FEATURES
from cfbrain.preprocess.mri import VolumeSliceSet
from cfbrain.saliency.methods import SaliencySettings, counterfactual_saliency, normalise
from cfbrain.train import Phase, SeededTransformDataset, TrainConfig, fit, seed_everything
from cfbrain.train.classification import inverse_frequency_weights


def slice_classifier(in_channels: int) -> nn.Module:
    """(B, C, H, W) slices in [0, 1] -> (B, 1) lesion logits (module docstring)."""
    backbone = resnet18(spatial_dims=2, n_input_channels=in_channels, conv1_t_stride=2, bias_downsample=False,
                        feed_forward=False)
    return nn.Sequential(backbone, nn.Linear(RESNET_FEATURES[18], 1))


class LesionLoss:
    """Binary cross-entropy on ``label`` with the positive class weighted by n_negative / n_positive of
    the training set (:func:`cfbrain.train.classification.inverse_frequency_weights`; 1 when a class is
    absent); logs accuracy."""

    def __init__(self, train_labels: np.ndarray) -> None:
        weights = inverse_frequency_weights(np.asarray(train_labels, dtype=int), 2)
        self.pos_weight = (weights[1] / weights[0]).reshape(1) if (weights > 0).all() else torch.ones(1)

    def __call__(self, model: nn.Module, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, dict]:
        logits = model(batch["image"])[:, 0].float()
        loss = F.binary_cross_entropy_with_logits(logits, batch["label"], pos_weight=self.pos_weight.to(logits.device))
        return loss, {"acc": ((logits > 0).float() == batch["label"]).float().mean()}


def train_slice_classifier(train: VolumeSliceSet, val: VolumeSliceSet | None, config: TrainConfig, out_dir: Path,
                           checkpoint_dir: Path) -> Path:
    """Train :func:`slice_classifier` (flips as augmentation, best ``val_acc`` kept when validating).
    Returns ``out_dir/final.pt``."""
    seed_everything(config.seed)
    model = slice_classifier(train.image.shape[1])
    data = SeededTransformDataset(SliceImages(train), flip_sample, config.seed)
    phase = Phase("slice_classifier", LesionLoss(train.lesion))
    fit(model, [phase], data, SliceImages(val) if val is not None and len(val.scan) else None, config,
        Path(out_dir), checkpoint_dir=Path(checkpoint_dir))
    return Path(out_dir) / "final.pt"


def train_plane_autoencoder(train: VolumeSliceSet, architecture: SpatialAutoencoderConfig, config: TrainConfig,
                            out_dir: Path, checkpoint_dir: Path) -> Path:
    """Train the saliency autoencoder on every contrast plane of ``train`` (pixel MSE). Returns ``final.pt``."""
    seed_everything(config.seed)
    fit(SpatialAutoencoder(architecture), [autoencoder_phase()], SlicePlanes(train), None, config, Path(out_dir),
        checkpoint_dir=Path(checkpoint_dir))
    return Path(out_dir) / "final.pt"


class ContrastSlice(nn.Module):
    """f for the saliency methods: one slice's contrasts (C, H, W) -> the classifier's 0-d lesion logit."""

    def __init__(self, classifier: nn.Module) -> None:
        super().__init__()
        self.classifier = classifier.eval()

    def forward(self, contrasts: torch.Tensor) -> torch.Tensor:
        return self.classifier(contrasts[None])[0, 0]


def slice_saliency(classifier: nn.Module, autoencoder: SpatialAutoencoder, images: np.ndarray,
                   settings: SaliencySettings) -> np.ndarray:
    """Counterfactual saliency (towards lesion and towards none, §5.5.3) of each slice: images (N, C, H, W)
    in [0, 1] -> float32 (N, H, W) in [0, 1], on the classifier's device."""
    device = next(classifier.parameters()).device
    f = ContrastSlice(classifier)
    maps = []
    for image in images:
        contrasts = torch.from_numpy(np.ascontiguousarray(image, dtype=np.float32)).to(device)
        saliency, _ = counterfactual_saliency(f, autoencoder.eval(), contrasts, settings)
        maps.append(normalise(saliency.mean(dim=0)).detach().cpu().numpy())
    return np.stack(maps).astype(np.float32) if maps else np.zeros((0, *images.shape[-2:]), np.float32)
