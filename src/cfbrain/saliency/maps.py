"""One scan's saliency map: compute it from ``preproc/{scan}/tensor.npz``, write and read
``saliency/{method}/seed{k}/{scan}.npz``.

NPZ KEYS (``write_saliency`` / ``read_saliency``), (S, H, W) = the tensor's image shape:

==================  ============  =============================================================
key                 dtype, shape  meaning
==================  ============  =============================================================
saliency            float16 SxHxW map in [0, 1], slice i belongs to tensor slice i
method              str           one of :data:`~cfbrain.saliency.methods.METHODS`
probability         float32       P(lesion) of the classifier on the tensor itself
trace_<name>        float32 (n,)  the method's search trace (below); absent for the others
format              str           "cfbrain-saliency/1"
==================  ============  =============================================================

Traces: ``counterfactual`` has ``trace_to_lesion`` and ``trace_to_none`` (P(lesion) along the eq. 5.4
steps 0..steps towards each target) and ``trace_objective_to_lesion`` / ``trace_objective_to_none``
(g(z_k)); ``counterfactual_negative`` the two "to_none" ones; ``latent_shift`` has ``trace_lambda``
and ``trace_shift`` (P(lesion) at each lambda tried). Figure 5.5 plots them.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch import nn

from cfbrain.models.autoencoder import SpatialAutoencoder, SpatialAutoencoderConfig
from cfbrain.models.mtl_cnn import MultiTaskHemisphereCNN
from cfbrain.preprocess.ct import load_tensor
from cfbrain.preprocess.npz import read_npz, write_npz
from cfbrain.saliency.classifier import LesionClassifier
from cfbrain.saliency.methods import (COUNTERFACTUAL_METHODS, LESION, METHODS, NO_LESION, SaliencySettings,
                                      counterfactual_saliency, grad_cam, integrated_gradients, latent_shift,
                                      vanilla_gradient)
from cfbrain.train.checkpoint import load_weights
from cfbrain.train.runtime import select_device

SALIENCY_FORMAT = "cfbrain-saliency/1"
_TRACE = "trace_"
_TARGET_NAMES = {LESION: "to_lesion", NO_LESION: "to_none"}


@dataclass(frozen=True)
class Saliency:
    """One scan's map (float16 (S, H, W) in [0, 1]), its method, P(lesion) of the input and the traces."""

    method: str
    values: np.ndarray
    probability: float
    trace: dict[str, np.ndarray] = field(default_factory=dict)


def load_classifier(weights: Path, device: str | torch.device | None = None) -> MultiTaskHemisphereCNN:
    """The trained hemisphere CNN (``models/mtl/seed{k}/final.pt``) in eval mode on ``device``."""
    return load_weights(MultiTaskHemisphereCNN(), Path(weights)).to(select_device(device)).eval()


def load_autoencoder(weights: Path, architecture: SpatialAutoencoderConfig = SpatialAutoencoderConfig(),
                     device: str | torch.device | None = None) -> SpatialAutoencoder:
    """The trained autoencoder (``models/autoencoder/seed{k}/final.pt``) in eval mode on ``device``."""
    return load_weights(SpatialAutoencoder(architecture), Path(weights)).to(select_device(device)).eval()


def _search_traces(method: str, slices: torch.Tensor, f: LesionClassifier, autoencoder: SpatialAutoencoder,
                   settings: SaliencySettings) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    if method == "latent_shift":
        saliency, search = latent_shift(f, autoencoder, slices, start=settings.shift_start,
                                        stop_probability=settings.shift_stop_probability,
                                        max_doublings=settings.shift_max_doublings)
        return saliency, {"lambda": search.lambdas, "shift": search.probability}
    targets = (LESION, NO_LESION) if method == "counterfactual" else (NO_LESION,)
    saliency, searches = counterfactual_saliency(f, autoencoder, slices, settings, targets)
    trace = {}
    for target, search in searches.items():
        trace[_TARGET_NAMES[target]] = search.probability
        trace[f"objective_{_TARGET_NAMES[target]}"] = search.objective
    return saliency, trace


def compute_saliency(method: str, tensor_npz: Path, classifier: nn.Module, autoencoder: SpatialAutoencoder | None,
                     settings: SaliencySettings) -> Saliency:
    """The ``method`` map of one preprocessed scan (module docstring of :mod:`cfbrain.saliency.methods`).

    classifier: the trained hemisphere CNN (:func:`load_classifier`); autoencoder: the trained
    autoencoder on the same device, required by ``counterfactual``, ``counterfactual_negative`` and
    ``latent_shift`` (None for the others). Runs on the classifier's device.
    """
    if method not in METHODS:
        raise ValueError(f"unknown saliency method {method!r}; known: {METHODS}")
    if method in COUNTERFACTUAL_METHODS and autoencoder is None:
        raise ValueError(f"{method} needs the trained autoencoder")
    tensor = load_tensor(tensor_npz)
    device = next(classifier.parameters()).device
    slices = torch.from_numpy(np.ascontiguousarray(tensor.image, dtype=np.float32)).to(device)
    f = LesionClassifier(classifier, tensor.midline_col, slices.shape[-1]).to(device)
    with torch.no_grad():
        probability = float(torch.sigmoid(f(slices)))
    trace: dict[str, torch.Tensor] = {}
    if method in COUNTERFACTUAL_METHODS:
        saliency, trace = _search_traces(method, slices, f, autoencoder.eval(), settings)
    elif method == "gradient":
        saliency = vanilla_gradient(f, slices)
    elif method == "gradcam":
        saliency = grad_cam(f, slices)
    else:
        saliency = integrated_gradients(f, slices, settings.ig_steps)
    return Saliency(method, saliency.detach().cpu().numpy().astype(np.float16), probability,
                    {k: v.detach().cpu().numpy().astype(np.float32) for k, v in trace.items()})


def write_saliency(path: Path, saliency: Saliency) -> Path:
    """Write ``saliency`` as ``path`` (.npz, byte-reproducible; keys in the module docstring)."""
    values = np.asarray(saliency.values)
    if values.ndim != 3 or values.dtype != np.float16 or not (0 <= values.min() and values.max() <= 1):
        raise ValueError(f"a saliency map is float16 (S, H, W) in [0, 1], got {values.dtype} {values.shape}")
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    write_npz(path, {"saliency": values, "method": np.str_(saliency.method),
                     "probability": np.float32(saliency.probability),
                     **{_TRACE + k: np.asarray(v, dtype=np.float32) for k, v in saliency.trace.items()},
                     "format": np.str_(SALIENCY_FORMAT)})
    return Path(path)


def read_saliency(path: Path) -> Saliency:
    """Read a file written by :func:`write_saliency`."""
    arrays = read_npz(path, SALIENCY_FORMAT)
    return Saliency(str(arrays["method"]), arrays["saliency"], float(arrays["probability"]),
                    {k[len(_TRACE):]: v for k, v in arrays.items() if k.startswith(_TRACE)})
