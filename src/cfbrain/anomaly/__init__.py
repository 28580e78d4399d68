"""Thesis 003 chapter 6: Dif-fuse healthy counterfactuals and anomaly maps on CT and MRI, and its ablations.

Modules: data (slice splits by subject, torch datasets of multi-contrast slices), ddpm (the healthy-only
diffusion model of §6.5.3 through the shared training loop), classifier (the MRI slice classifier and the
chapter-5 counterfactual saliency on it), methods (Dif-fuse and the §6.6.2 ablations over a slice set).
Scores and Table 6.1: :mod:`cfbrain.metrics.anomaly`. Images are [0, 1] here and [-1, 1] inside the
diffusion model (:mod:`cfbrain.preprocess.intensity`, contract 7).
"""
