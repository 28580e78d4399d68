"""Networks: the multi-task hemisphere CNN of thesis 003, its full-brain peers, the counterfactual
autoencoder, ACAT and ACAT's peers."""
from __future__ import annotations

from torch import nn

from cfbrain.models.acat import ACAT, load_baseline, preactivation_variances
from cfbrain.models.autoencoder import SpatialAutoencoder, SpatialAutoencoderConfig
from cfbrain.models.mtl_cnn import MultiTaskHemisphereCNN, SliceCNN, predict_four_class
from cfbrain.models.peers import SliceAveragedClassifier, build_peer, full_brain_cnn, resnet_peer, swin_peer, vit_peer
from cfbrain.models.saliency_peers import SALIENCY_MODELS, build_saliency_model


def count_parameters(*modules: nn.Module, trainable_only: bool = False) -> int:
    """Number of parameters (elements) over ``modules``, each shared parameter counted once."""
    unique = {id(p): p for module in modules for p in module.parameters()
              if p.requires_grad or not trainable_only}
    return sum(p.numel() for p in unique.values())


__all__ = [
    "ACAT", "MultiTaskHemisphereCNN", "SALIENCY_MODELS", "SliceCNN", "SliceAveragedClassifier", "SpatialAutoencoder",
    "SpatialAutoencoderConfig", "build_peer", "build_saliency_model", "count_parameters", "full_brain_cnn",
    "load_baseline", "predict_four_class", "preactivation_variances", "resnet_peer", "swin_peer", "vit_peer",
]
