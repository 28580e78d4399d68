"""Saliency maps of thesis 003 §5.5.3-5.5.4 and §5.6.5: the adversarial latent counterfactual and its peers.

Every function explains f (:class:`~cfbrain.saliency.classifier.LesionClassifier`: one scan's slices
x (S, H, W) in [0, 1] -> presence logit) and returns a map (S, H, W) >= 0 on x's grid, slice i of the
map belonging to slice i of x, normalised to [0, 1] by its maximum over the whole scan (all zeros when
the maximum is 0). The autoencoder works slice by slice (:class:`~cfbrain.models.autoencoder.SpatialAutoencoder`).

- ``counterfactual`` (eq. 5.3-5.4, the thesis's method, class-agnostic): z0 = E(x); ``steps`` plain
  gradient steps z <- z - beta * grad g(z), g(z) = CE(f(D(z)), t) + alpha * ||z - z0||_1, once with
  t = lesion and once with t = no lesion; each map |D(z0) - D(z')| normalised by its own maximum, then
  the two averaged (the authors' code normalised the second map by the first one's maximum after the
  first had been normalised; not reproduced). ||.||_1 is taken as the authors' code takes it
  (``nn.L1Loss``: the mean absolute difference over the latent's elements), which is what makes
  alpha = 100 balance the two terms.
- ``counterfactual_negative``: the same with t = no lesion only, the map §5.6.5 scores ("we generated
  negative counterfactuals").
- ``latent_shift`` (Cohen et al. 2021, "gifsplanation"): z_lambda = z0 + lambda * dP(lesion)/dz at z0;
  lambda = -start, -2 start, -4 start, ... (§5.5.4: 1e-5, doubled at each attempt) until P(lesion) of
  D(z_lambda) falls below ``shift_stop_probability`` (0.01, §4.7) or ``shift_max_doublings`` is reached;
  the counterfactual is the attempt with the lowest P(lesion); map |D(z0) - D(z_lambda)|.
- ``gradient`` (Simonyan et al. 2014): |df/dx| of the presence logit (one channel: no max over colours).
- ``gradcam`` (Selvaraju et al. 2017) on the trunk's last convolutional block: the trunk is a 2-D CNN
  applied to each hemisphere slice, so each hemisphere slice n gets channel weights
  a_nc = mean over positions of df/dA_nc and map ReLU(sum_c a_nc A_nc); the maps are upsampled
  bilinearly to the hemisphere grid and the hemispheres re-assembled (mirror and midline shift undone).
- ``integrated_gradients`` (Sundararajan et al. 2017): |(x - 0) * mean over ``ig_steps`` midpoints
  alpha of df/dx at alpha * x| with the all-zero (black) baseline.
"""
from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from cfbrain.models.autoencoder import SpatialAutoencoder
from cfbrain.models.mtl_cnn import HEMISPHERES
from cfbrain.saliency.classifier import LesionClassifier
from cfbrain.settings import from_mapping

NO_LESION, LESION = 0, 1
COUNTERFACTUAL_METHODS = ("counterfactual", "counterfactual_negative", "latent_shift")
"""Methods that need the autoencoder."""
METHODS = (*COUNTERFACTUAL_METHODS, "gradient", "gradcam", "integrated_gradients")

Classifier = Callable[[torch.Tensor], torch.Tensor]
"""(S, H, W) slices -> 0-d presence logit."""


@dataclass(frozen=True)
class SaliencySettings:
    """The ``saliency`` config section; defaults are the thesis's values (eq. 5.4: 20 steps, alpha = 100;
    beta: 0.1 in the ACAT code, 0.001 in the Dif-fuse code; latent shift from 1e-5, doubled)."""

    steps: int = 20
    alpha: float = 100.0
    step_size: float = 0.1
    shift_start: float = 1e-5
    shift_stop_probability: float = 0.01
    shift_max_doublings: int = 30
    ig_steps: int = 50

    @classmethod
    def from_mapping(cls, values: dict) -> SaliencySettings:
        return from_mapping(cls, values, "saliency")


def normalise(saliency: torch.Tensor) -> torch.Tensor:
    """A map >= 0 divided by its maximum (all zeros when the maximum is 0)."""
    peak = saliency.max()
    return saliency / peak if peak > 0 else torch.zeros_like(saliency)


def mean_of_normalised(maps: Sequence[torch.Tensor]) -> torch.Tensor:
    """Each map normalised by its own maximum, then averaged (§5.5.3)."""
    return torch.stack([normalise(m) for m in maps]).mean(dim=0)


@dataclass(frozen=True)
class LatentSearch:
    """One run of eq. 5.4: the counterfactual D(z') (S, H, W), and P(lesion) of D(z_k) and g(z_k) for
    k = 0 (z0 = E(x)) .. steps, each (steps + 1,)."""

    counterfactual: torch.Tensor
    probability: torch.Tensor
    objective: torch.Tensor


def latent_counterfactual(f: Classifier, autoencoder: SpatialAutoencoder, slices: torch.Tensor, target: int, *,
                          steps: int, alpha: float, step_size: float) -> LatentSearch:
    """Minimise g(z) = BCE(f(D(z)), target) + alpha * mean|z - E(x)| by ``steps`` plain gradient steps."""
    with torch.no_grad():
        z0 = autoencoder.encode(slices[:, None])
    z, goal = z0.clone(), torch.tensor(float(target), device=slices.device)
    probability, objective = [], []
    for step in range(steps + 1):
        z.requires_grad_(True)
        decoded = autoencoder.decode(z)[:, 0]
        logit = f(decoded)
        g = F.binary_cross_entropy_with_logits(logit, goal) + alpha * F.l1_loss(z, z0)
        probability.append(torch.sigmoid(logit).detach())
        objective.append(g.detach())
        if step < steps:
            (gradient,) = torch.autograd.grad(g, z)
            z = (z - step_size * gradient).detach()
    return LatentSearch(decoded.detach(), torch.stack(probability), torch.stack(objective))


def reconstruct(autoencoder: SpatialAutoencoder, slices: torch.Tensor) -> torch.Tensor:
    """D(E(x)): (S, H, W) -> (S, H, W)."""
    with torch.no_grad():
        return autoencoder(slices[:, None])[:, 0]


def counterfactual_saliency(f: Classifier, autoencoder: SpatialAutoencoder, slices: torch.Tensor,
                            settings: SaliencySettings, targets: Sequence[int] = (LESION, NO_LESION),
                            ) -> tuple[torch.Tensor, dict[int, LatentSearch]]:
    """The thesis's map: |D(E(x)) - D(z'_t)| for each target t, each normalised, then averaged; with the
    searches by target."""
    reference = reconstruct(autoencoder, slices)
    searches = {t: latent_counterfactual(f, autoencoder, slices, t, steps=settings.steps, alpha=settings.alpha,
                                         step_size=settings.step_size) for t in targets}
    return mean_of_normalised([(reference - s.counterfactual).abs() for s in searches.values()]), searches


@dataclass(frozen=True)
class ShiftSearch:
    """The latent-shift sweep: every lambda tried (n,), P(lesion) of its image (n,), and the image of the
    lowest P(lesion) (S, H, W)."""

    counterfactual: torch.Tensor
    lambdas: torch.Tensor
    probability: torch.Tensor


def latent_shift(f: Classifier, autoencoder: SpatialAutoencoder, slices: torch.Tensor, *, start: float,
                 stop_probability: float, max_doublings: int) -> tuple[torch.Tensor, ShiftSearch]:
    """Cohen et al.'s map with §5.5.4's doubling search for lambda (module docstring)."""
    with torch.no_grad():
        z0 = autoencoder.encode(slices[:, None])
    z0.requires_grad_(True)
    reference = autoencoder.decode(z0)[:, 0]
    (direction,) = torch.autograd.grad(torch.sigmoid(f(reference)), z0)
    lambdas, probability, best = [], [], None
    with torch.no_grad():
        for k in range(max_doublings + 1):
            lam = -start * 2.0 ** k
            image = autoencoder.decode(z0 + lam * direction)[:, 0]
            p = torch.sigmoid(f(image))
            if not probability or p < min(probability):
                best = image
            lambdas.append(lam)
            probability.append(p)
            if p < stop_probability:
                break
    search = ShiftSearch(best, torch.tensor(lambdas), torch.stack(probability).cpu())
    return normalise((reference.detach() - best).abs()), search


def input_gradient(f: Classifier, slices: torch.Tensor) -> torch.Tensor:
    """df/dx at ``slices``: (S, H, W)."""
    x = slices.detach().requires_grad_(True)
    (gradient,) = torch.autograd.grad(f(x), x)
    return gradient


def vanilla_gradient(f: Classifier, slices: torch.Tensor) -> torch.Tensor:
    """Simonyan et al.'s map |df/dx|, normalised."""
    return normalise(input_gradient(f, slices).abs())


def integrated_gradients(f: Classifier, slices: torch.Tensor, steps: int) -> torch.Tensor:
    """|x * mean_k df/dx((k + 1/2) / steps * x)|, normalised (black baseline, midpoint rule)."""
    total = sum(input_gradient(f, (k + 0.5) / steps * slices) for k in range(steps))
    return normalise((slices * total / steps).abs())


def grad_cam(f: LesionClassifier, slices: torch.Tensor) -> torch.Tensor:
    """Grad-CAM of the presence logit on ``f.cam_layer``, per hemisphere slice, on the slice grid."""
    captured: dict[str, torch.Tensor] = {}

    def keep(_module: nn.Module, _inputs, output: torch.Tensor) -> None:
        captured["maps"] = output

    handle = f.cam_layer.register_forward_hook(keep)
    try:
        logit = f(slices)
    finally:
        handle.remove()
    maps = captured["maps"]  # (2 * S, C, h, w): hemisphere-major, as the model reshapes its input
    (gradient,) = torch.autograd.grad(logit, maps)
    cam = F.relu((gradient.mean(dim=(2, 3), keepdim=True) * maps).sum(dim=1)).detach()
    n_slices, height, width = slices.shape
    cam = cam.reshape(len(HEMISPHERES), n_slices, *cam.shape[-2:])
    return normalise(f.to_slices(cam, height, width).clamp_min(0))
