"""Realism of generated images: FID and KID on a pluggable feature extractor (thesis 000 §4.1).

Features are extracted once per image set (:func:`extract_features`, any ``nn.Module`` mapping
(N, 1, H, W) images in [0, 1] to (N, d), e.g. :func:`cfbrain.models.features.feature_extractor`) and the
distances are computed by torchmetrics' ``FrechetInceptionDistance`` / ``KernelInceptionDistance``, whose
``feature`` argument takes a custom module: here an identity on precomputed features
(:class:`PrecomputedFeatures`), so bootstrapping does not re-run the network.

* FID (eq. 2.13) ``||mu_r - mu_g||^2 + Tr(S_r + S_g - 2 (S_r S_g)^{1/2})`` in float64; torchmetrics takes
  the matrix square root's trace from the eigenvalues of ``S_r S_g`` (no ``scipy.linalg.sqrtm``).
* Bootstrapped FID (thesis 000 §4.1): the generated set stays fixed and the real (reference) set is resampled
  with replacement ``n_bootstrap`` times (10 in the thesis); reported as mean ± standard deviation
  (population std over the runs).
* KID: the unbiased polynomial-kernel MMD^2 ``k(x, y) = (x.y / d + 1)^3`` averaged over ``subsets``
  random subsets of ``subset_size`` samples of each set (without replacement; default: half the smaller
  set, so that subsets differ and the std means something on test sets of tens of images), mean ± std over
  subsets, seeded.
"""
from __future__ import annotations

import logging
import warnings
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn
from torchmetrics.image.fid import FrechetInceptionDistance
from torchmetrics.image.kid import KernelInceptionDistance

log = logging.getLogger(__name__)


class PrecomputedFeatures(nn.Module):
    """Identity "feature extractor" for torchmetrics: the inputs already are (N, d) features."""

    def __init__(self, num_features: int) -> None:
        super().__init__()
        self.num_features = num_features

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return features


@dataclass(frozen=True)
class Bootstrap:
    """Mean and (population) standard deviation of a statistic over bootstrap runs, and the runs."""

    mean: float
    std: float
    values: tuple[float, ...]


@torch.no_grad()
def extract_features(extractor: nn.Module, images: np.ndarray | torch.Tensor, *, batch_size: int = 64
                     ) -> torch.Tensor:
    """(N, d) float64 CPU features of images (N, H, W) or (N, 1, H, W) in [0, 1], computed in batches on
    the extractor's device (in eval mode)."""
    tensor = torch.as_tensor(np.asarray(images, np.float32) if isinstance(images, np.ndarray) else images)
    if tensor.ndim == 3:
        tensor = tensor[:, None]
    device = next(extractor.parameters()).device
    extractor.eval()
    parts = [extractor(tensor[start:start + batch_size].to(device, torch.float32)).double().cpu()
             for start in range(0, tensor.shape[0], batch_size)]
    if not parts:
        raise ValueError("no images to extract features from")
    return torch.cat(parts)


def _as_features(features: np.ndarray | torch.Tensor) -> torch.Tensor:
    tensor = torch.as_tensor(features, dtype=torch.float64)
    if tensor.ndim != 2:
        raise ValueError(f"expected (N, d) features, got shape {tuple(tensor.shape)}")
    return tensor


def frechet_distance(real: np.ndarray | torch.Tensor, fake: np.ndarray | torch.Tensor) -> float:
    """FID between two (N, d) feature sets (module docstring); each set needs at least 2 samples."""
    real, fake = _as_features(real), _as_features(fake)
    metric = FrechetInceptionDistance(feature=PrecomputedFeatures(real.shape[1]))
    metric.update(real, real=True)
    metric.update(fake, real=False)
    return float(metric.compute())


def bootstrap_fid(real: np.ndarray | torch.Tensor, fake: np.ndarray | torch.Tensor, *, n_bootstrap: int = 10,
                  seed: int = 0) -> Bootstrap:
    """FID with the real set resampled with replacement ``n_bootstrap`` times (generated set fixed)."""
    real = _as_features(real)
    rng = np.random.default_rng(seed)
    values = tuple(frechet_distance(real[rng.integers(0, len(real), len(real))], fake) for _ in range(n_bootstrap))
    return Bootstrap(mean=float(np.mean(values)), std=float(np.std(values)), values=values)


def kernel_distance(real: np.ndarray | torch.Tensor, fake: np.ndarray | torch.Tensor, *, subsets: int = 100,
                    subset_size: int | None = None, seed: int = 0) -> tuple[float, float]:
    """KID (mean, std over subsets) between two (N, d) feature sets (module docstring)."""
    real, fake = _as_features(real), _as_features(fake)
    size = subset_size or max(2, min(len(real), len(fake)) // 2)
    with warnings.catch_warnings():  # torchmetrics warns that it keeps every feature: (N, d) here is small
        warnings.filterwarnings("ignore", message=".*will save all extracted features.*")
        metric = KernelInceptionDistance(feature=PrecomputedFeatures(real.shape[1]), subsets=subsets,
                                         subset_size=size)
    metric.update(real, real=True)
    metric.update(fake, real=False)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        mean, std = metric.compute()
    return float(mean), float(std)


def generative_scores(real: np.ndarray | torch.Tensor, fake: np.ndarray | torch.Tensor, *, n_bootstrap: int = 10,
                      kid_subsets: int = 100, seed: int = 0) -> dict[str, float]:
    """``fid_mean``, ``fid_std`` (bootstrapped) and ``kid_mean``, ``kid_std`` of two feature sets."""
    fid = bootstrap_fid(real, fake, n_bootstrap=n_bootstrap, seed=seed)
    kid_mean, kid_std = kernel_distance(real, fake, subsets=kid_subsets, seed=seed)
    return {"fid_mean": fid.mean, "fid_std": fid.std, "kid_mean": kid_mean, "kid_std": kid_std}
