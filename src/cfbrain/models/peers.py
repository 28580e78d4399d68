"""Full-brain peers of thesis 003 Table 4.2 (and the full-brain ablation of section 4.4.2).

Input convention: (B, S, H, W) float32 in [0, 1], the whole (unsplit) brain. Every slice goes through a
2-D backbone; the features are averaged over the slices and one linear layer gives the four-class logits
(the thesis's "mean pooling across the slices, followed by a linear projection").

ViT and Swin are not offered: MONAI's 2-D ViT and Swin blocks need ``einops``, which this environment
does not ship.
"""
from __future__ import annotations

import torch
from monai.networks.nets import resnet18, resnet50
from torch import nn

from cfbrain.metrics.classification import FOUR_CLASSES
from cfbrain.models.mtl_cnn import FILTERS, SliceCNN

RESNET_FEATURES = {18: 512, 50: 2048}
THESIS_PARAMETER_COUNTS = {"resnet18": 11_172_292, "resnet50": 23_509_956}


class SliceAveragedClassifier(nn.Module):
    """(B, S, H, W) -> (B, n_classes) logits: ``backbone`` per slice, mean over slices, linear layer.

    Args:
        backbone: maps (N, 1, H, W) to (N, n_features).
    """

    def __init__(self, backbone: nn.Module, n_features: int, n_classes: int = len(FOUR_CLASSES)) -> None:
        super().__init__()
        self.backbone = backbone
        self.classifier = nn.Linear(n_features, n_classes)

    def slice_features(self, brain: torch.Tensor) -> torch.Tensor:
        """(B, S, H, W) -> (B, S, n_features)."""
        if brain.ndim != 4:
            raise ValueError(f"expected (B, S, H, W) brains, got {tuple(brain.shape)}")
        b, s, height, width = brain.shape
        return self.backbone(brain.reshape(b * s, 1, height, width)).reshape(b, s, -1)

    def forward(self, brain: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.slice_features(brain).mean(dim=1))


def resnet_peer(depth: int, n_classes: int = len(FOUR_CLASSES)) -> SliceAveragedClassifier:
    """MONAI ResNet-18 or -50 (2-D, one input channel, 7x7 stride-2 stem, max pooling, no bias in the
    downsampling shortcuts): exactly the thesis's 11,172,292 / 23,509,956 parameters with four classes."""
    if depth not in RESNET_FEATURES:
        raise ValueError(f"ResNet depth must be one of {sorted(RESNET_FEATURES)}, got {depth}")
    factory = {18: resnet18, 50: resnet50}[depth]
    backbone = factory(spatial_dims=2, n_input_channels=1, conv1_t_stride=2, bias_downsample=False,
                       feed_forward=False)
    return SliceAveragedClassifier(backbone, RESNET_FEATURES[depth], n_classes)


def full_brain_cnn(filters: tuple[int, ...] = FILTERS, n_classes: int = len(FOUR_CLASSES)) -> SliceAveragedClassifier:
    """The thesis's own seven-layer CNN trained end-to-end on full brains for the four classes (section
    4.4.2 ablation, 71 % validation accuracy against 76 % for the hemisphere model)."""
    trunk = SliceCNN(filters)
    return SliceAveragedClassifier(trunk, trunk.out_features, n_classes)


def build_peer(name: str) -> SliceAveragedClassifier:
    """A peer by name: ``resnet18``, ``resnet50`` or ``full_brain_cnn``."""
    builders = {"resnet18": lambda: resnet_peer(18), "resnet50": lambda: resnet_peer(50),
                "full_brain_cnn": full_brain_cnn}
    if name not in builders:
        raise ValueError(f"unknown peer {name!r}; choose from {sorted(builders)}")
    return builders[name]()
