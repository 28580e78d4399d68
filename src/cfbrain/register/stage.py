"""The registration stages of the workflow: one registration per kept scan, then the cohort QC."""
from __future__ import annotations

import logging
from pathlib import Path

import pandas as pd

from cfbrain.convert.exclusions import STATUS_COLUMNS, read_status_tables
from cfbrain.dicom.headers import exported_series_age
from cfbrain.register.figures import montage_members, plot_pca_clusters, plot_registration_montage
from cfbrain.register.qc import QCCriteria, load_linear_parts, read_review, registration_qc
from cfbrain.register.registration import register_template_to_ct
from cfbrain.register.result import RegistrationFailed
from cfbrain.register.templates import choose_template

log = logging.getLogger(__name__)
MATRIX, TEMPLATE_IN_CT, TEMPLATE_USED = "template_to_ct.mat", "template_in_ct.nii.gz", "template.txt"
REGISTER_STATUS_COLUMNS = STATUS_COLUMNS + ["backend", "template", "age_years", "metric", "iterations", "seconds"]


def register_scan(scan: str, ct_path: Path, dicom_dir: Path, templates: list[dict], out_dir: Path,
                  status_tsv: Path, *, backend: str, threads: int) -> dict:
    """Register the age-matched template to one CT into ``out_dir`` and write its status row.

    ``templates``: the config's age-indexed list with ``path`` already pointing at template files.
    A registration failure is a status (excluded, reason: the failure's code in
    :data:`~cfbrain.register.result.FAILURE_REASONS`), not an exception.
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    age = exported_series_age(dicom_dir)
    template = choose_template(age, templates)
    (out_dir / TEMPLATE_USED).write_text(str(template) + "\n")
    row = {"scan": scan, "stage": "register", "template": Path(template).name, "age_years": age,
           "backend": "", "metric": None, "iterations": None, "seconds": None}
    try:
        result = register_template_to_ct(ct_path, template, out_dir / MATRIX, out_dir / TEMPLATE_IN_CT,
                                         backend=backend, threads=threads)
    except RegistrationFailed as failure:
        row.update(status="excluded", reason=failure.reason, detail=failure.detail)
    else:
        row.update(status="kept", reason="", detail=result.stop_condition, backend=result.backend,
                   metric=result.metric_value, iterations=result.iterations, seconds=round(result.seconds, 2))
    log.info("%s: %s %s", scan, row["status"], row["detail"])
    pd.DataFrame([row], columns=REGISTER_STATUS_COLUMNS).to_csv(status_tsv, sep="\t", index=False)
    return row


def registration_quality(scans: list[str], registration_dirs: list[Path], ct_paths: list[Path],
                         statuses: list[Path], review_tsv: Path | None, criteria: QCCriteria, *, max_clusters: int,
                         seed: int, table_tsv: Path, clusters_tsv: Path, scatter_png: Path, montage_dir: Path,
                         montage_per_cluster: int = 6) -> pd.DataFrame:
    """PCA + GMM over every successful registration; writes the per-scan verdicts, the cluster
    summary, the PCA scatter and one montage per cluster. Returns the per-scan table, in which
    failed registrations appear as rejected with their failure code (column ``failure``) and detail."""
    status = read_status_tables(statuses, REGISTER_STATUS_COLUMNS)
    ok = set(status.loc[status.status == "kept", "scan"])
    registered = [(s, Path(d), Path(c)) for s, d, c in zip(scans, registration_dirs, ct_paths) if s in ok]
    templates = [Path((d / TEMPLATE_USED).read_text().strip()) for _, d, _ in registered]
    linear = load_linear_parts([d / MATRIX for _, d, _ in registered], templates, [c for _, _, c in registered])
    review = read_review(review_tsv) if review_tsv else None
    qc = registration_qc(linear, [s for s, _, _ in registered], criteria, review=review, max_clusters=max_clusters,
                         seed=seed)
    qc.scans.to_csv(table_tsv, sep="\t", index=False)
    qc.clusters.to_csv(clusters_tsv, sep="\t", index=False)
    plot_pca_clusters(qc, scatter_png)
    _cluster_montages(qc.scans, {s: (c, d / TEMPLATE_IN_CT) for s, d, c in registered}, Path(montage_dir),
                      montage_per_cluster, seed)
    failed = status[status.status != "kept"]
    table = pd.concat([qc.scans, pd.DataFrame({"scan": failed.scan, "verdict": "reject",
                                                "reason": failed.detail, "verdict_source": "registration failed",
                                                "failure": failed.reason})],
                      ignore_index=True)
    log.info("registration QC (%s): %d accepted, %d rejected", qc.method, int((table.verdict == "accept").sum()),
             int((table.verdict != "accept").sum()))
    return table


def _cluster_montages(scans: pd.DataFrame, pairs: dict[str, tuple[Path, Path]], out_dir: Path, per_cluster: int,
                      seed: int) -> None:
    out_dir.mkdir(parents=True, exist_ok=True)
    verdicts = scans.groupby("cluster").verdict.agg(lambda v: v.mode().iloc[0])
    for cluster, members in montage_members(scans, per_cluster, seed).items():
        plot_registration_montage([pairs[s] for s in members], out_dir / f"cluster_{cluster}.png", titles=members,
                                  title=f"cluster {cluster}: {verdicts.get(cluster, '')} ({len(members)} shown)")


def registration_exclusions(qc_table: pd.DataFrame) -> pd.DataFrame:
    """Status rows (stage register/registration_qc) for the exclusion table."""
    rejected = qc_table[qc_table.verdict != "accept"]
    failed = rejected.verdict_source == "registration failed"
    return pd.DataFrame({"scan": rejected.scan, "stage": ["register" if f else "registration_qc" for f in failed],
                         "status": "excluded",
                         "reason": [code if f else "registration" for f, code in zip(failed, rejected.failure)],
                         "detail": rejected.reason.fillna("")})
