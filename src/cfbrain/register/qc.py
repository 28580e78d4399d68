"""Cohort quality check of the registrations (thesis 003 §3.4.4 step 5), semi-automatic.

The thesis took the 3x3 linear part of every registration matrix, projected the cohort
onto 3 principal components (77 % of the variance on IST-3), clustered that space with a
Gaussian mixture, judged each cluster valid or invalid by eye and gave every scan its
cluster's verdict. Here each cluster also gets an automatic verdict from a testable
criterion on its members' *typical* transform, and a review table overrides any cluster's
or scan's verdict.

Linear parts are taken from the template world RAS -> CT world RAS affine (``fromFlirt``),
not from the raw FLIRT matrix: the FLIRT matrix also carries each CT's voxel storage order
(e.g. LAS vs LPS), which would split a cohort into clusters by file layout, and rotation
angles and scales only mean something in world space. DICOM patient coordinates make a
well-registered head close to the identity whatever the position on the table.

Criterion: polar decomposition L = Q P (Q orthogonal, P symmetric positive definite).
A transform is implausible if Q is a reflection, its rotation angle exceeds
``max_rotation_deg`` (default 45 deg; the thesis' failures were 180 deg flips), or a
principal stretch (singular value of L) lies outside ``scale_range`` (default 0.7-1.4).
A cluster is rejected when the median of its members' rotation angles or extreme scales
fails the criterion, or most of its members are reflections: "depending on the
registration quality of the majority of the scans contained in them".
"""
from __future__ import annotations

import logging
import warnings
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
import pandas as pd
from scipy.spatial.transform import Rotation
from sklearn.decomposition import PCA
from sklearn.exceptions import ConvergenceWarning
from sklearn.mixture import GaussianMixture
from threadpoolctl import threadpool_limits

from cfbrain.register.flirt_matrix import read_template_to_ct

log = logging.getLogger(__name__)
VERDICTS = ("accept", "reject")
MIN_SCANS_FOR_CLUSTERING = 4
N_COMPONENTS = 3
SCAN_COLUMNS = ["scan", "pc1", "pc2", "pc3", "cluster", "cluster_verdict", "verdict", "reason", "verdict_source",
                "scan_criterion", "rotation_deg", "scale_min", "scale_max", "reflection", "qc_method"]
CLUSTER_COLUMNS = ["cluster", "n_scans", "rotation_deg", "scale_min", "scale_max", "reflection_fraction",
                   "auto_verdict", "verdict", "reason"]
NO_CLUSTER = -1
_COVARIANCE_FLOOR = 1e-3
"""GMM covariance regularisation as a fraction of the mean PC variance: a handful of
identical matrices must not make a singular (infinitely likely) component."""


@dataclass(frozen=True)
class QCCriteria:
    """Plausibility of a template world RAS -> CT world RAS linear part."""

    max_rotation_deg: float = 45.0
    scale_range: tuple[float, float] = (0.7, 1.4)


@dataclass(frozen=True, eq=False)
class RegistrationQC:
    """Outcome of :func:`registration_qc`.

    Attributes:
        scans: one row per scan, columns :data:`SCAN_COLUMNS`; ``verdict`` is final.
        clusters: one row per GMM cluster, columns :data:`CLUSTER_COLUMNS` (empty
            without clustering); clusters are numbered by size, largest = 0.
        explained_variance_ratio: (3,) of the PCA, empty without clustering.
        bic: number of GMM components -> BIC, over the range tried.
        method: ``pca_gmm`` or ``per_scan`` (fewer than 4 scans).
    """

    scans: pd.DataFrame
    clusters: pd.DataFrame
    explained_variance_ratio: np.ndarray
    bic: dict = field(default_factory=dict)
    method: str = "pca_gmm"


def load_linear_parts(matrix_paths, template_paths, ct_paths) -> np.ndarray:
    """(n, 3, 3) linear parts of the template world RAS -> CT world RAS affines of FLIRT
    ``.mat`` files (each with its own template and CT)."""
    parts = [read_template_to_ct(m, t, c)[:3, :3] for m, t, c in zip(matrix_paths, template_paths, ct_paths)]
    return np.stack(parts) if parts else np.empty((0, 3, 3))


def decompose_linear(linear: np.ndarray) -> pd.DataFrame:
    """Per (3, 3) matrix of an (n, 3, 3) stack: rotation angle (deg) of the orthogonal polar
    factor (of its proper part for a reflection), smallest and largest principal stretch,
    and whether it reflects. Columns rotation_deg, scale_min, scale_max, reflection."""
    left, stretches, right = np.linalg.svd(linear)
    orthogonal = left @ right
    reflection = np.linalg.det(orthogonal) < 0
    proper = orthogonal * np.where(reflection, -1.0, 1.0)[:, None, None]
    return pd.DataFrame({
        "rotation_deg": np.degrees(Rotation.from_matrix(proper).magnitude()),
        "scale_min": stretches.min(axis=1),
        "scale_max": stretches.max(axis=1),
        "reflection": reflection,
    })


def criterion_failures(rotation_deg: float, scale_min: float, scale_max: float, reflection: bool,
                       criteria: QCCriteria) -> list[str]:
    """Which parts of the criterion a (typical) transform fails, as short phrases."""
    low, high = criteria.scale_range
    failures = ["reflection"] if reflection else []
    if rotation_deg > criteria.max_rotation_deg:
        failures.append(f"rotation {rotation_deg:.0f} deg > {criteria.max_rotation_deg:g}")
    if scale_min < low:
        failures.append(f"scale {scale_min:.2f} < {low:g}")
    if scale_max > high:
        failures.append(f"scale {scale_max:.2f} > {high:g}")
    return failures


def cluster_linear_parts(linear: np.ndarray, max_clusters: int = 6, seed: int = 0):
    """PCA of the flattened (n, 3, 3) linear parts to 3 components, then a full-covariance
    Gaussian mixture with the number of components (1..max_clusters, < n) of lowest BIC.

    Returns (pcs (n, 3), labels (n,) ints with 0 = largest cluster, explained variance
    ratio (3,), {n_components: BIC}).
    """
    features = linear.reshape(len(linear), 9)
    fits, bic = {}, {}
    # one BLAS/OpenMP thread: the data are tiny and a shared machine makes k-means threads spin
    with threadpool_limits(limits=1), warnings.catch_warnings(), np.errstate(invalid="ignore"):
        warnings.simplefilter("ignore", ConvergenceWarning)  # fewer distinct points than k: BIC rejects it
        # identical matrices give a NaN explained variance ratio (0 / 0), reported as such
        pca = PCA(n_components=N_COMPONENTS, svd_solver="full")
        pcs = pca.fit_transform(features)
        reg_covar = max(_COVARIANCE_FLOOR * float(pcs.var(axis=0).mean()), 1e-9)
        for k in range(1, min(max_clusters, len(linear) - 1) + 1):
            fits[k] = GaussianMixture(k, covariance_type="full", reg_covar=reg_covar, n_init=5,
                                      random_state=seed).fit(pcs)
            bic[k] = float(fits[k].bic(pcs))
    best = min(bic, key=bic.get)
    raw = fits[best].predict(pcs)
    order = sorted(np.unique(raw), key=lambda c: (-np.sum(raw == c), pcs[raw == c, 0].mean()))
    rank = np.empty(raw.max() + 1, dtype=int)
    rank[order] = np.arange(len(order))
    labels = rank[raw]
    log.info("PCA explained variance %s; GMM BIC %s -> %d clusters",
             np.round(pca.explained_variance_ratio_, 3), {k: round(v, 1) for k, v in bic.items()}, best)
    return pcs, labels, pca.explained_variance_ratio_, bic


def summarise_clusters(scans: pd.DataFrame, criteria: QCCriteria) -> pd.DataFrame:
    """Per cluster: size, median rotation and extreme scales, reflection fraction, and the
    automatic verdict on the median transform."""
    rows = []
    for cluster, members in scans.groupby("cluster", sort=True):
        typical = members[["rotation_deg", "scale_min", "scale_max"]].median()
        reflection_fraction = float(members.reflection.mean())
        failures = criterion_failures(typical.rotation_deg, typical.scale_min, typical.scale_max,
                                      reflection_fraction > 0.5, criteria)
        verdict = "reject" if failures else "accept"
        rows.append({"cluster": int(cluster), "n_scans": len(members), **typical.to_dict(),
                     "reflection_fraction": reflection_fraction, "auto_verdict": verdict, "verdict": verdict,
                     "reason": (f"cluster {cluster} median: " + ", ".join(failures)) if failures else ""})
    return pd.DataFrame(rows, columns=CLUSTER_COLUMNS)


def registration_qc(linear: np.ndarray, scans, criteria: QCCriteria = QCCriteria(),
                    review: pd.DataFrame | None = None, max_clusters: int = 6, seed: int = 0) -> RegistrationQC:
    """Verdict per scan from the (n, 3, 3) linear parts (template world RAS -> CT world RAS)
    of the cohort's registrations, named by ``scans`` (n unique names).

    With at least 4 scans: PCA + GMM, each scan takes its cluster's verdict. With fewer,
    each scan is judged by the criterion alone (``qc_method`` says so). Then ``review``
    (see :func:`apply_review`) overrides.
    """
    scans = [str(s) for s in scans]
    linear = np.asarray(linear, dtype=np.float64)
    if linear.shape != (len(scans), 3, 3):
        raise ValueError(f"linear parts have shape {linear.shape}, expected ({len(scans)}, 3, 3)")
    if len(set(scans)) != len(scans):
        raise ValueError("scan names must be unique")
    table = pd.concat([pd.DataFrame({"scan": scans}), decompose_linear(linear)], axis=1)
    failures = [criterion_failures(r.rotation_deg, r.scale_min, r.scale_max, r.reflection, criteria)
                for r in table.itertuples()]
    table["scan_criterion"] = ["reject" if failed else "accept" for failed in failures]
    if len(scans) < MIN_SCANS_FOR_CLUSTERING:
        qc = _per_scan_qc(table, failures)
    else:
        pcs, labels, ratio, bic = cluster_linear_parts(linear, max_clusters, seed)
        table[["pc1", "pc2", "pc3"]] = pcs
        table["cluster"] = labels
        clusters = summarise_clusters(table, criteria)
        by_cluster = clusters.set_index("cluster")
        table["cluster_verdict"] = table.cluster.map(by_cluster.verdict)
        table["verdict"] = table.cluster_verdict
        table["reason"] = table.cluster.map(by_cluster.reason)
        table["verdict_source"] = "cluster (auto)"
        table["qc_method"] = "pca_gmm"
        qc = RegistrationQC(table[SCAN_COLUMNS], clusters, np.asarray(ratio), bic, "pca_gmm")
    return apply_review(qc, review)


def _per_scan_qc(table: pd.DataFrame, failures: list[list[str]]) -> RegistrationQC:
    table[["pc1", "pc2", "pc3"]] = np.nan
    table["cluster"] = NO_CLUSTER
    table["cluster_verdict"] = ""
    table["verdict"] = table.scan_criterion
    table["reason"] = [", ".join(failed) for failed in failures]
    table["verdict_source"] = "scan (auto)"
    table["qc_method"] = f"per_scan: fewer than {MIN_SCANS_FOR_CLUSTERING} scans, no PCA/GMM"
    log.warning("%d scan(s): too few for PCA + GMM, judging each scan alone", len(table))
    return RegistrationQC(table[SCAN_COLUMNS], pd.DataFrame(columns=CLUSTER_COLUMNS), np.empty(0), {}, "per_scan")


def read_review(path: str | Path) -> pd.DataFrame:
    """A review TSV: columns ``scan`` and/or ``cluster`` (one filled per row), ``verdict``
    (accept / reject), optional ``note``. A missing file means no review."""
    path = Path(path)
    if not path.is_file():
        return pd.DataFrame(columns=["scan", "cluster", "verdict", "note"])
    return pd.read_csv(path, sep="\t", dtype={"scan": str, "verdict": str, "note": str}, keep_default_na=False,
                       na_values={"cluster": [""]})


def apply_review(qc: RegistrationQC, review: pd.DataFrame | None) -> RegistrationQC:
    """Override verdicts from a review table (see :func:`read_review`): cluster rows first
    (the verdict spreads to every member), then scan rows, so a scan row wins.

    Raises ValueError for unknown scans or clusters, a verdict other than accept/reject,
    a row naming both or neither, or two rows for the same target. Cluster numbers are
    those of this cohort's fit: review them again whenever scans are added.
    """
    if review is None or review.empty:
        return qc
    review = review.copy()
    for column in ("scan", "cluster", "note"):
        if column not in review:
            review[column] = ""
    review = review.fillna({"scan": "", "note": ""})
    has_scan = review.scan.astype(str).str.strip() != ""
    has_cluster = pd.to_numeric(review.cluster.replace("", np.nan), errors="raise").notna()
    if (has_scan == has_cluster).any():
        raise ValueError("each review row must name exactly one of scan or cluster")
    bad = sorted(set(review.verdict) - set(VERDICTS))
    if bad:
        raise ValueError(f"review verdicts must be accept or reject, got {bad}")
    scans, clusters = qc.scans.copy(), qc.clusters.copy()
    cluster_rows = review[has_cluster].assign(cluster=lambda r: pd.to_numeric(r.cluster).astype(int))
    scan_rows = review[has_scan]
    for targets, kind in ((cluster_rows.cluster, "cluster"), (scan_rows.scan, "scan")):
        if targets.duplicated().any():
            raise ValueError(f"review names the same {kind} twice: {sorted(set(targets[targets.duplicated()]))}")
    unknown_clusters = sorted(set(cluster_rows.cluster) - set(clusters.cluster))
    unknown_scans = sorted(set(scan_rows.scan) - set(scans.scan))
    if unknown_clusters or unknown_scans:
        raise ValueError(f"review names unknown clusters {unknown_clusters} / scans {unknown_scans[:5]}")
    for row in cluster_rows.itertuples():
        reason = _review_reason(row.verdict, row.note)
        clusters.loc[clusters.cluster == row.cluster, ["verdict", "reason"]] = [row.verdict, reason]
        members = scans.cluster == row.cluster
        scans.loc[members, ["cluster_verdict", "verdict", "reason", "verdict_source"]] = [
            row.verdict, row.verdict, reason, "cluster (review)"]
    for row in scan_rows.itertuples():
        scans.loc[scans.scan == row.scan, ["verdict", "reason", "verdict_source"]] = [
            row.verdict, _review_reason(row.verdict, row.note), "scan (review)"]
    log.info("review applied: %d cluster and %d scan overrides", len(cluster_rows), len(scan_rows))
    return replace(qc, scans=scans, clusters=clusters)


def _review_reason(verdict: str, note: str) -> str:
    return f"review: {verdict}" + (f" ({note})" if note else "")
