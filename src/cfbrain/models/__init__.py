"""Networks: the multi-task hemisphere CNN of thesis 003, its full-brain peers and the counterfactual autoencoder."""
from __future__ import annotations

from torch import nn

from cfbrain.models.autoencoder import SpatialAutoencoder, SpatialAutoencoderConfig
from cfbrain.models.mtl_cnn import MultiTaskHemisphereCNN, SliceCNN, predict_four_class
from cfbrain.models.peers import SliceAveragedClassifier, build_peer, full_brain_cnn, resnet_peer, swin_peer, vit_peer


def count_parameters(*modules: nn.Module, trainable_only: bool = False) -> int:
    """Number of parameters (elements) over ``modules``, each shared parameter counted once."""
    unique = {id(p): p for module in modules for p in module.parameters()
              if p.requires_grad or not trainable_only}
    return sum(p.numel() for p in unique.values())


__all__ = [
    "MultiTaskHemisphereCNN", "SliceCNN", "SliceAveragedClassifier", "SpatialAutoencoder", "SpatialAutoencoderConfig",
    "build_peer", "count_parameters", "full_brain_cnn", "predict_four_class", "resnet_peer", "swin_peer", "vit_peer",
]
