"""Figures of thesis 003 chapter 5: saliency maps of one scan by every method (Figure 5.4) and P(lesion)
along the counterfactual search against the latent-shift lambda sweep (Figure 5.5). PNG, matplotlib."""
from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np

from cfbrain.preprocess.ct import CTTensor
from cfbrain.saliency.maps import Saliency


def _pyplot():
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    return plt


def shown_slice(tensor: CTTensor) -> int:
    """The slice with the most lesion voxels, or the middle slice without a lesion mask or lesion."""
    mask = tensor.lesion_mask
    if mask is None or not mask.any():
        return tensor.image.shape[0] // 2
    return int(np.argmax(mask.reshape(mask.shape[0], -1).sum(axis=1)))


def saliency_figure(tensor: CTTensor, maps: Mapping[str, Saliency], path: Path, title: str = "",
                    shown: float = 0.5) -> Path:
    """Figure 5.4: the image, then each method's map as a red overlay, on :func:`shown_slice`; the true
    lesion outlined in cyan. Map values below ``shown`` are transparent. Radiological orientation."""
    plt = _pyplot()
    index = shown_slice(tensor)
    image = tensor.image[index]
    figure, axes = plt.subplots(1, len(maps) + 1, figsize=(2.4 * (len(maps) + 1), 3.2), squeeze=False)
    panels = [("image", None), *maps.items()]
    for ax, (name, saliency) in zip(axes[0], panels):
        ax.imshow(image, cmap="gray", vmin=0, vmax=1)
        if saliency is not None:
            values = saliency.values[index].astype(np.float32)
            ax.imshow(np.ma.masked_less(values, shown), cmap="Reds", vmin=0, vmax=1, alpha=0.8)
        if tensor.lesion_mask is not None and tensor.lesion_mask[index].any():
            ax.contour(tensor.lesion_mask[index], levels=[0.5], colors="cyan", linewidths=0.8)
        ax.set_title(name.replace("_", " "), fontsize=8)
        ax.axis("off")
    figure.suptitle(f"{title} slice {index} (R on the left; saliency >= {shown:g} in red, lesion in cyan)",
                    fontsize=8)
    figure.tight_layout()
    figure.savefig(path, dpi=120)
    plt.close(figure)
    return Path(path)


def probability_trace_figure(counterfactuals: Sequence[Saliency], shifts: Sequence[Saliency],
                             path: Path, names: Sequence[str] | None = None) -> Path:
    """Figure 5.5: (a) P(lesion) against |lambda| of the latent-shift sweeps (``latent_shift`` maps),
    (b) P(lesion) along the eq. 5.4 steps towards "no lesion" (``counterfactual`` or
    ``counterfactual_negative`` maps), one line per scan (same order in both, named by ``names``)."""
    plt = _pyplot()
    figure, (left, right) = plt.subplots(1, 2, figsize=(9, 3.4))
    for k, shift in enumerate(shifts):
        left.plot(np.abs(shift.trace["lambda"]), shift.trace["shift"], marker=".",
                  label=names[k] if names else None)
    left.set(xscale="log", xlabel="|lambda| (latent shift towards no lesion)", ylabel="P(lesion)",
             ylim=(0, 1), title="(a) latent shift, doubling search")
    for k, counterfactual in enumerate(counterfactuals):
        trace = counterfactual.trace["to_none"]
        right.plot(np.arange(len(trace)), trace, marker=".", label=names[k] if names else None)
    right.set(xlabel="gradient step (eq. 5.4, target no lesion)", ylabel="P(lesion)", ylim=(0, 1),
              title="(b) adversarial latent counterfactual")
    if names:
        right.legend(fontsize=7)
    figure.tight_layout()
    figure.savefig(path, dpi=120)
    plt.close(figure)
    return Path(path)
