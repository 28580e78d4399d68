"""Saliency maps of thesis 003 chapter 5 and their hit score.

Modules: classifier (the binary lesion classifier f on full slices, differentiable hemisphere split),
methods (adversarial latent counterfactuals, eq. 5.3-5.4, and the peers: latent shift, gradient,
Grad-CAM, integrated gradients), maps (one scan's map: compute, write, read), territories (territory
atlas into each scan's tensor grid, hit score), figures (Figures 5.4 and 5.5).
"""
from cfbrain.saliency.classifier import LesionClassifier, join_hemispheres, split_hemispheres
from cfbrain.saliency.maps import (Saliency, compute_saliency, load_autoencoder, load_classifier, read_saliency,
                                   write_saliency)
from cfbrain.saliency.methods import METHODS, SaliencySettings
from cfbrain.saliency.territories import (TERRITORY_LABELS, hit_score, hit_score_table, is_hit, read_territory_map,
                                          scan_hits, scan_territory_map, territory_map, true_labels, write_synthetic_territory_atlas,
                                          write_territory_map)

__all__ = [
    "LesionClassifier", "METHODS", "Saliency", "SaliencySettings", "TERRITORY_LABELS", "compute_saliency",
    "hit_score", "hit_score_table", "is_hit", "join_hemispheres", "load_autoencoder", "load_classifier",
    "read_saliency", "read_territory_map", "scan_hits", "scan_territory_map", "split_hemispheres", "territory_map", "true_labels",
    "write_saliency", "write_synthetic_territory_atlas", "write_territory_map",
]
