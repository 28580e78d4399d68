"""Feature extractors for FID/KID (:mod:`cfbrain.metrics.generative`): (N, 1, H, W) images in [0, 1] -> (N, d).

Two choices, picked by :func:`feature_extractor`:

1. **RadImageNet ResNet-50** (the thesis's choice, §4.1), when a weights file is configured. The trunk is
   the Keras-converted ResNet-50 of the RadImageNet PyTorch port (github.com/Warvito/radimagenet-models,
   the network MONAI Generative's FID tutorials load with ``torch.hub``): every convolution has a bias,
   the stride of a downsampling bottleneck sits on its first 1x1 convolution, batch-norm eps 1.001e-5.
   Nothing is downloaded: save that model's ``state_dict()`` once (``torch.save(model.state_dict(), path)``)
   and point the config at the file. Preprocessing as in those tutorials: the grey image repeated to
   3 channels (BGR order, identical for grey), the per-channel means (0.406, 0.456, 0.485) subtracted, no
   scaling; features = the spatial mean of the last stage, d = 2048. Images are fed at their own size.
2. **In-domain autoencoder** (the default without RadImageNet weights): the encoder of
   :class:`SliceAutoencoder`, a small convolutional autoencoder the pipeline trains with
   :class:`ReconstructionLoss` (pixel MSE) on the training slices of the dataset (healthy and lesioned);
   features = the spatial mean of the bottleneck, d = ``channels[-1]`` (256 by default). It needs no labels
   and shares no weights with the segmenter that gives the Dice scores, so realism (FID/KID) and
   adherence (Dice) stay independent measurements; being trained on the same kind of slices, its
   features respond to MRI appearance rather than to natural-image statistics. FID values on it are not
   comparable to the thesis's numbers, only between methods of one run.
"""
from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from cfbrain.train.checkpoint import load_weights
from cfbrain.train.config import Phase
from cfbrain.settings import from_mapping

log = logging.getLogger(__name__)

RADIMAGENET_BGR_MEAN = (0.406, 0.456, 0.485)
_KERAS_BN_EPS = 1.001e-5
_IGNORED_PREFIXES = ("module.", "model.", "backbone.")


# --------------------------------------------------------------------------- RadImageNet ResNet-50


class _Bottleneck(nn.Module):
    """Keras-style bottleneck: 1x1 (stride) -> 3x3 -> 1x1 (x4), biases on, projection shortcut if needed."""

    expansion = 4

    def __init__(self, in_channels: int, width: int, stride: int = 1) -> None:
        super().__init__()
        out_channels = width * self.expansion
        self.conv1 = nn.Conv2d(in_channels, width, 1, stride=stride)
        self.bn1 = nn.BatchNorm2d(width, eps=_KERAS_BN_EPS)
        self.conv2 = nn.Conv2d(width, width, 3, padding=1)
        self.bn2 = nn.BatchNorm2d(width, eps=_KERAS_BN_EPS)
        self.conv3 = nn.Conv2d(width, out_channels, 1)
        self.bn3 = nn.BatchNorm2d(out_channels, eps=_KERAS_BN_EPS)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = None
        if stride != 1 or in_channels != out_channels:
            self.downsample = nn.Sequential(nn.Conv2d(in_channels, out_channels, 1, stride=stride),
                                            nn.BatchNorm2d(out_channels, eps=_KERAS_BN_EPS))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        identity = x if self.downsample is None else self.downsample(x)
        return self.relu(out + identity)


class RadImageNetResNet50(nn.Module):
    """ResNet-50 trunk with the RadImageNet port's parameter names: (N, 3, H, W) -> (N, 2048, H/32, W/32)."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, 64, 7, stride=2, padding=3)
        self.bn1 = nn.BatchNorm2d(64, eps=_KERAS_BN_EPS)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(3, stride=2, padding=1)
        in_channels = 64
        for index, (width, blocks, stride) in enumerate(((64, 3, 1), (128, 4, 2), (256, 6, 2), (512, 3, 2)), 1):
            layers = []
            for block in range(blocks):
                layers.append(_Bottleneck(in_channels, width, stride if block == 0 else 1))
                in_channels = width * _Bottleneck.expansion
            setattr(self, f"layer{index}", nn.Sequential(*layers))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        return self.layer4(self.layer3(self.layer2(self.layer1(x))))


class RadImageNetFeatures(nn.Module):
    """(N, 1, H, W) in [0, 1] -> (N, 2048): RadImageNet preprocessing, trunk, spatial mean (module docstring).

    Always in eval mode (batch norms use their running statistics).
    """

    num_features = 2048

    def __init__(self, trunk: RadImageNetResNet50) -> None:
        super().__init__()
        self.trunk = trunk
        self.register_buffer("mean", torch.tensor(RADIMAGENET_BGR_MEAN).view(1, 3, 1, 1), persistent=False)
        self.eval()

    def train(self, mode: bool = True) -> RadImageNetFeatures:
        return super().train(False)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        x = images.float().expand(-1, 3, -1, -1) - self.mean
        return self.trunk(x).mean(dim=(2, 3))


def _strip_state_dict(state: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Drop a classifier head (``fc.*``) and wrapper prefixes (``module.``, ``model.``, ``backbone.``)."""
    stripped = {}
    for key, value in state.items():
        for prefix in _IGNORED_PREFIXES:
            if key.startswith(prefix):
                key = key[len(prefix):]
        if not key.startswith("fc."):
            stripped[key] = value
    return stripped


def load_radimagenet_features(path: str | Path, device: str | torch.device = "cpu") -> RadImageNetFeatures:
    """RadImageNet ResNet-50 features from a saved state dict (module docstring); every trunk parameter
    and buffer must be present (strict load).

    Raises:
        RuntimeError: if the file's keys or shapes do not match the trunk.
    """
    state = torch.load(Path(path), map_location="cpu", weights_only=True)
    if "state_dict" in state and isinstance(state["state_dict"], Mapping):
        state = state["state_dict"]
    trunk = RadImageNetResNet50()
    trunk.load_state_dict(_strip_state_dict(state), strict=True)
    log.info("RadImageNet ResNet-50 weights from %s", path)
    return RadImageNetFeatures(trunk).to(device)


# --------------------------------------------------------------------------- in-domain autoencoder


@dataclass(frozen=True)
class AutoencoderConfig:
    """Channels per encoder stage; every stage after the first halves the resolution (H and W must be
    divisible by 2 ** (len(channels) - 1))."""

    channels: tuple[int, ...] = (32, 64, 128, 256)

    @classmethod
    def from_mapping(cls, values: Mapping) -> AutoencoderConfig:
        """From a config section (YAML lists become tuples); unknown keys are an error."""
        return from_mapping(cls, values, "autoencoder")


def _conv_block(in_channels: int, out_channels: int, stride: int = 1) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(in_channels, out_channels, 3, stride=stride, padding=1),
                         nn.GroupNorm(min(8, out_channels), out_channels), nn.SiLU())


class SliceAutoencoder(nn.Module):
    """Convolutional autoencoder (N, 1, H, W) in [0, 1] -> reconstruction (N, 1, H, W).

    Encoder: a 3x3 block, then one stride-2 block per further stage; decoder: nearest upsampling + 3x3
    block per stage, then a 3x3 convolution to one channel.
    """

    def __init__(self, config: AutoencoderConfig = AutoencoderConfig()) -> None:
        super().__init__()
        channels: Sequence[int] = config.channels
        self.encoder = nn.Sequential(_conv_block(1, channels[0]), *[
            _conv_block(a, b, stride=2) for a, b in zip(channels[:-1], channels[1:])])
        decoder = []
        for a, b in zip(channels[::-1][:-1], channels[::-1][1:]):
            decoder += [nn.Upsample(scale_factor=2, mode="nearest"), _conv_block(a, b)]
        self.decoder = nn.Sequential(*decoder, nn.Conv2d(channels[0], 1, 3, padding=1))

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.decoder(self.encoder(images))


class AutoencoderFeatures(nn.Module):
    """(N, 1, H, W) in [0, 1] -> (N, channels[-1]): spatial mean of the autoencoder's bottleneck."""

    def __init__(self, autoencoder: SliceAutoencoder) -> None:
        super().__init__()
        self.encoder = autoencoder.encoder
        self.num_features = int(autoencoder.encoder[-1][0].out_channels)
        self.eval()

    def train(self, mode: bool = True) -> AutoencoderFeatures:
        return super().train(False)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.encoder(images.float()).mean(dim=(2, 3))


class ReconstructionLoss:
    """Pixel MSE of the autoencoder's reconstruction, for :func:`cfbrain.train.fit`. Batch: ``image``
    (B, 1, H, W) in [0, 1]."""

    def __call__(self, model: nn.Module, batch: Mapping[str, torch.Tensor]) -> tuple[torch.Tensor, dict]:
        return F.mse_loss(model(batch["image"]).float(), batch["image"].float()), {}


def autoencoder_phase(*, epochs: int | None = None, lr: float | None = None) -> Phase:
    """The single training phase of the in-domain feature autoencoder."""
    return Phase("feature_autoencoder", ReconstructionLoss(), epochs=epochs, lr=lr)


def feature_extractor(*, radimagenet_weights: str | Path | None = None, autoencoder_weights: str | Path | None = None,
                      autoencoder_config: AutoencoderConfig = AutoencoderConfig(),
                      device: str | torch.device = "cpu") -> nn.Module:
    """The FID/KID feature extractor: RadImageNet when its weights are given, else the trained in-domain
    autoencoder's encoder (module docstring), in eval mode on ``device``.

    Raises:
        ValueError: if neither weights file is given.
    """
    if radimagenet_weights:
        return load_radimagenet_features(radimagenet_weights, device)
    if not autoencoder_weights:
        raise ValueError("give RadImageNet ResNet-50 weights or the trained feature autoencoder's weights")
    autoencoder = load_weights(SliceAutoencoder(autoencoder_config), Path(autoencoder_weights))
    return AutoencoderFeatures(autoencoder).to(device)
