"""QC figures of the registration check: the PCA space by cluster, and per-cluster montages
of CT slices with the registered template's outline. Figures are drawn on matplotlib
``Figure`` objects (Agg canvas), never through pyplot's global state."""
from __future__ import annotations

from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd
from matplotlib import colormaps
from matplotlib.figure import Figure

from cfbrain.register.qc import RegistrationQC

CT_WINDOW_HU = (0.0, 100.0)


def montage_members(scans: pd.DataFrame, per_cluster: int = 6, seed: int = 0) -> dict[int, list[str]]:
    """Cluster -> up to ``per_cluster`` member scans (sorted names), drawn at random with
    ``seed``; ``scans`` is :attr:`RegistrationQC.scans`."""
    rng = np.random.default_rng(seed)
    chosen = {}
    for cluster, members in scans.groupby("cluster", sort=True):
        names = sorted(members.scan)
        chosen[int(cluster)] = sorted(rng.choice(names, size=min(per_cluster, len(names)), replace=False).tolist())
    return chosen


def plot_pca_clusters(qc: RegistrationQC, path: str | Path) -> Path:
    """PC1-PC2 and PC1-PC3 scatter of the cohort coloured by cluster; rejected clusters
    drawn as crosses, scans whose reviewed verdict differs from their cluster's ringed.
    Without clustering (fewer than 4 scans) the figure says so and counts the verdicts."""
    figure = Figure(figsize=(13, 4.8), layout="constrained")
    axes = figure.subplots(1, 2)
    scans = qc.scans
    if qc.method != "pca_gmm":
        for ax in axes:
            ax.set_axis_off()
        counts = scans.verdict.value_counts().to_dict()
        message = (f"{len(scans)} scan(s): too few for PCA + GMM\nper-scan verdicts: {counts}" if len(scans)
                   else "no scan was registered: see qc/exclusions.tsv")
        axes[0].text(0.0, 0.5, message, transform=axes[0].transAxes, va="center")
        return _save(figure, path)
    palette = colormaps["tab10"]
    verdicts = qc.clusters.set_index("cluster").verdict
    for ax, (x, y) in zip(axes, (("pc1", "pc2"), ("pc1", "pc3"))):
        for cluster, members in scans.groupby("cluster", sort=True):
            rejected = verdicts[cluster] == "reject"
            ax.scatter(members[x], members[y], s=28, color=palette(cluster % 10), marker="x" if rejected else "o",
                       label=f"cluster {cluster} (n={len(members)}, {verdicts[cluster]})")
        overridden = scans[scans.verdict != scans.cluster_verdict]
        if len(overridden):
            ax.scatter(overridden[x], overridden[y], s=110, facecolors="none", edgecolors="black",
                       label="scan verdict overridden")
        ax.set_xlabel(f"{x.upper()} ({qc.explained_variance_ratio[int(x[-1]) - 1]:.0%} of variance)")
        ax.set_ylabel(f"{y.upper()} ({qc.explained_variance_ratio[int(y[-1]) - 1]:.0%} of variance)")
    figure.legend(*axes[0].get_legend_handles_labels(), loc="outside right upper", fontsize="small")
    figure.suptitle(f"Registration matrices: PCA ({qc.explained_variance_ratio.sum():.0%} of variance) "
                    f"+ GMM ({len(verdicts)} clusters by BIC)")
    return _save(figure, path)


def mid_axial_slices(ct_path: str | Path, template_in_ct_path: str | Path):
    """(ct_hu, template, template_max, aspect): the middle axial slice of a CT and of the
    template resampled onto it, both reoriented to RAS and laid out for display in
    radiological convention (rows = posterior -> anterior, columns = patient right ->
    left), the template's maximum over the whole volume, and row / column voxel size."""
    ct = nib.as_closest_canonical(nib.load(str(ct_path)))
    template = nib.as_closest_canonical(nib.load(str(template_in_ct_path)))
    if ct.shape[:3] != template.shape[:3]:
        raise ValueError(f"{template_in_ct_path} is not on the grid of {ct_path}")
    middle = ct.shape[2] // 2
    zooms = ct.header.get_zooms()
    return (_radiological(ct, middle), _radiological(template, middle), float(np.max(template.dataobj)),
            zooms[1] / zooms[0])


def _radiological(image: nib.Nifti1Image, k: int) -> np.ndarray:
    """(J, I) axial slice ``k`` of a RAS-oriented image, patient right on the left."""
    return np.asarray(image.dataobj[:, :, k], dtype=np.float32)[::-1, :].T


def plot_registration_montage(pairs, path: str | Path, titles=None, title: str = "",
                              outline_fraction: float = 0.3, columns: int = 3) -> Path:
    """One panel per (ct path, template_in_ct path) pair: the mid-axial CT slice windowed to
    0-100 HU with the outline where the registered template exceeds ``outline_fraction`` of
    its maximum (no outline when the slice misses the template). ``titles`` labels the panels (e.g. scan names)."""
    pairs = list(pairs)
    if not pairs:
        raise ValueError("no scans to draw")
    titles = list(titles) if titles is not None else [Path(ct).name for ct, _ in pairs]
    rows = int(np.ceil(len(pairs) / columns))
    figure = Figure(figsize=(3.2 * min(columns, len(pairs)), 3.4 * rows), layout="constrained")
    axes = np.atleast_1d(figure.subplots(rows, min(columns, len(pairs)), squeeze=False)).ravel()
    for ax, (ct_path, template_path), label in zip(axes, pairs, titles):
        ct, template, template_max, aspect = mid_axial_slices(ct_path, template_path)
        ax.imshow(ct, cmap="gray", vmin=CT_WINDOW_HU[0], vmax=CT_WINDOW_HU[1], origin="lower", aspect=aspect)
        level = outline_fraction * template_max
        if template.min() < level < template.max():
            ax.contour(template, levels=[level], colors="orange", linewidths=1.0)
        ax.text(0.02, 0.5, "R", color="yellow", transform=ax.transAxes, va="center")
        ax.text(0.98, 0.5, "L", color="yellow", transform=ax.transAxes, va="center", ha="right")
        ax.set_title(label, fontsize="small")
    for ax in axes:
        ax.set_axis_off()
    if title:
        figure.suptitle(title)
    return _save(figure, path)


def _save(figure: Figure, path: str | Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=110)
    return path
