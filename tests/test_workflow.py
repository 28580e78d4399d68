"""The tiny config through the ingest rules, checked against the synthetic cohort's ground truth."""
from __future__ import annotations

import gzip
import shutil
from pathlib import Path

import pandas as pd
import pydicom
import pytest

from cfbrain.dicom.pseudonymise import PseudonymKey
from conftest import REPO, snakemake

pytestmark = pytest.mark.workflow
DATASET = "tiny-ct"
EXPECTED = {"kept": ("kept", ""), "bone": ("excluded", "bone_kernel"), "localiser": ("excluded", "localiser"),
            "non_axial": ("excluded", "non_axial"), "split_review": ("needs_review", "split_skull_review")}


@pytest.fixture(scope="module")
def truth(tiny_run):
    key = PseudonymKey.load(tiny_run / "private" / DATASET / "pseudonym.key")
    series = pd.read_csv(tiny_run / "sources" / DATASET / "truth" / "series.tsv", sep="\t", dtype=str)
    series["scan"] = [key.scan(p, s, e) for p, s, e in zip(series.patient_id, series.study_uid, series.series_uid)]
    return series


def test_every_planted_series_is_caught_at_ingest(tiny_run, truth):
    table = pd.read_csv(tiny_run / "results" / DATASET / "qc" / "ingest.tsv", sep="\t", keep_default_na=False)
    series = table[table.unit == "series"].set_index("id")
    assert len(series) == len(truth), "series in != kept + excluded"
    for row in truth.itertuples():
        got = tuple(series.loc[row.scan, ["status", "reason"]])
        assert got == EXPECTED[row.expected], (row.kind, got)


def test_registration_rejects_bad_poses_and_keeps_the_rest(tiny_run, truth):
    table = pd.read_csv(tiny_run / "results" / DATASET / "qc" / "exclusions.tsv", sep="\t", keep_default_na=False)
    series = table[table.unit == "series"].set_index("id")
    assert len(series) == len(truth)
    kept_at_ingest = truth[truth.expected == "kept"]
    bad = kept_at_ingest[kept_at_ingest.kind == "bad_pose"]
    good = kept_at_ingest[kept_at_ingest.kind != "bad_pose"]
    assert len(bad) >= 1
    assert (series.loc[bad.scan, "reason"] == "registration").all()
    accepted = (series.loc[good.scan, "status"] == "kept").mean()
    assert accepted >= 0.95, series.loc[good.scan, ["status", "reason"]]
    assert set(truth.kind) >= {"axial", "bone", "localizer", "localizer_blank", "sagittal", "coronal", "mixed",
                               "split_base", "split_vault", "bad_pose", "tilt", "uneven", "full_size"}


def test_corrections_recorded_for_tilt_and_uneven_spacing(tiny_run, truth):
    converted = {row.scan: pd.read_csv(tiny_run / "results" / DATASET / "qc" / "convert" / f"{row.scan}.tsv", sep="\t")
                 for row in truth.itertuples() if row.kind in ("tilt", "uneven")}
    corrections = {truth.set_index("scan").kind[scan]: table.correction.item() for scan, table in converted.items()}
    assert corrections["tilt"] == "gantry_tilt_corrected"
    assert corrections["uneven"] == "equidistant_resampled"


def _phi_strings(source: Path) -> set[str]:
    found = set()
    for path in sorted((source / "dicom").rglob("*"))[::7]:
        if not path.is_file():
            continue
        ds = pydicom.dcmread(path, stop_before_pixels=True)
        found |= {str(ds.PatientID), str(ds.PatientBirthDate), str(ds.InstitutionName), str(ds.AccessionNumber),
                  str(ds.StudyInstanceUID), str(ds.SeriesInstanceUID), str(ds.SOPInstanceUID)}
        found |= {part for part in str(ds.PatientName).split("^") if len(part) > 3}
    return {text for text in found if len(text) >= 4}


def test_no_phi_under_results_or_in_logs(tiny_run):
    phi = _phi_strings(tiny_run / "sources" / DATASET)
    assert len(phi) > 20
    files = [p for p in (tiny_run / "results").rglob("*") if p.is_file()]
    files += [p for p in (tiny_run / ".snakemake" / "log").rglob("*") if p.is_file()]
    for path in files:
        blob = gzip.decompress(path.read_bytes()) if path.suffix == ".gz" else path.read_bytes()
        leaked = [text for text in phi if text.encode() in blob or text.encode() in str(path).encode()]
        assert not leaked, f"{path.relative_to(tiny_run)} holds {leaked[:3]}"


def test_labels_are_pseudonymised(tiny_run, truth):
    labels = pd.read_csv(tiny_run / "results" / DATASET / "labels.tsv", sep="\t")
    assert set(labels.patient) == {scan.split("_")[0] for scan in truth.scan}
    assert {"lesion", "side", "territory", "size", "age", "timepoint"} <= set(labels.columns)


def test_every_job_left_a_provenance_record(tiny_run, truth):
    records = list((tiny_run / "results" / DATASET / "provenance").rglob("*.json"))
    rules = {path.parent.name for path in records}
    assert rules == {"synth_ct", "index", "export_series", "convert", "ingest_qc", "exclusions", "labels", "template",
                     "register", "registration_qc", "truth_mask", "preprocess", "preprocess_qc", "splits",
                     "preprocessing_montage", "train_classifier", "predict_classifier", "classification_report",
                     "territory_atlas", "territory_map", "train_autoencoder", "train_limited_baseline", "saliency",
                     "train_acat", "predict_acat", "preactivation_variances", "saliency_report", "acat_report"}
    candidates = pd.read_csv(tiny_run / "results" / DATASET / "index" / "series.tsv", sep="\t").verdict.eq("candidate").sum()
    assert sum(path.parent.name == "convert" for path in records) == candidates


def test_rerun_is_a_no_op(tiny_run):
    result = snakemake(tiny_run, "--dry-run")
    assert result.returncode == 0 and "Nothing to be done" in result.stdout + result.stderr


def test_code_change_reruns_exactly_its_rules(tiny_run, tmp_path):
    package = tmp_path / "src"
    shutil.copytree(REPO / "src", package, ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))
    with open(package / "cfbrain" / "preprocess" / "figures.py", "a") as handle:
        handle.write("\n# a change to the montage code\n")
    result = snakemake(tiny_run, "--dry-run", env_extra={"PYTHONPATH": str(package)})
    assert result.returncode == 0, result.stderr[-2000:]
    assert _job_counts(result.stdout) == {"preprocessing_montage": 1, "all": 1}
    with open(package / "cfbrain" / "preprocess" / "masks.py", "a") as handle:
        handle.write("\n# a change to the brain-mask code\n")
    result = snakemake(tiny_run, "--dry-run", env_extra={"PYTHONPATH": str(package)})
    preprocessed = pd.read_csv(tiny_run / "results" / DATASET / "qc" / "preprocess.tsv", sep="\t").status.eq("kept").sum()
    chapter5 = {"territory_atlas": 1, "territory_map": preprocessed, "train_autoencoder": 1, "train_limited_baseline": 1,
                "saliency": 5, "train_acat": 4, "predict_acat": 6, "preactivation_variances": 1, "saliency_report": 1,
                "acat_report": 1}  # tiny.yaml: 4 full-run maps + 1 at half the data; (acat, smic) + smic on gradient
    assert _job_counts(result.stdout) == {"preprocess": preprocessed, "preprocess_qc": 1, "splits": 1,
                                          "preprocessing_montage": 1, "exclusions": 1, "train_classifier": 1,
                                          "predict_classifier": 1, "classification_report": 1, "all": 1, **chapter5}


def _job_counts(dry_run_output: str) -> dict[str, int]:
    lines = dry_run_output.split("Job stats:")[1].splitlines()[3:]
    counts = {}
    for line in lines:
        parts = line.split()
        if len(parts) != 2 or parts[0] == "total":
            break
        counts[parts[0]] = int(parts[1])
    return counts


def test_saliency_maps_cover_every_scan_slice_for_slice(tiny_run):
    """Chapter 5: one map per scan of the seed's splits, per method and run, on its tensor's (S, H, W) grid."""
    from cfbrain.preprocess.ct import load_tensor
    from cfbrain.saliency import read_saliency
    root = tiny_run / "results" / DATASET
    split = pd.read_csv(root / "splits" / "seed0.tsv", sep="\t")
    folders = sorted((root / "saliency").glob("*/*/seed0"))
    assert {f"{f.parts[-3]}/{f.parts[-2]}" for f in folders} >= {"full/counterfactual", "full/gradient",
                                                                  "full/gradcam", "full/latent_shift",
                                                                  "frac0.5/counterfactual"}
    for folder in folders:
        assert sorted(p.stem for p in folder.glob("*.npz")) == sorted(split.scan)
        for scan in split.scan:
            values = read_saliency(folder / f"{scan}.npz").values
            assert values.shape == load_tensor(root / "preproc" / scan / "tensor.npz").image.shape
            assert 0 <= values.min() and values.max() <= 1


def test_territories_hold_the_synthetic_lesions(tiny_run):
    """The synthetic atlas carried into each tensor grid puts most lesion voxels in the scan's true territories
    (the registration, the label resampling and the preprocessing geometry agree)."""
    from cfbrain.preprocess.ct import load_tensor
    from cfbrain.saliency import read_territory_map, true_labels
    from cfbrain.train.stroke import scan_table
    root = tiny_run / "results" / DATASET
    split = scan_table(pd.read_csv(root / "splits" / "seed0.tsv", sep="\t"), pd.read_csv(root / "labels.tsv", sep="\t"))
    inside, total = 0, 0
    for row in split[split.lesion == 1].itertuples():
        lesion = load_tensor(root / "preproc" / row.scan / "tensor.npz").lesion_mask > 0
        territory = read_territory_map(root / "territories" / f"{row.scan}.npz")
        inside += int(pd.Series(territory[lesion]).isin(true_labels(row.territory, row.side)).sum())
        total += int(lesion.sum())
    assert total > 0 and inside / total > 0.9  # measured 0.98: the rest are lesion edges


def test_chapter5_tables(tiny_run):
    root = tiny_run / "results" / DATASET
    saliency = (root / "tables" / "saliency.md").read_text()
    for method in ("counterfactual", "latent_shift", "gradient", "gradcam"):
        assert f"| {method} |" in saliency
    acat = (root / "tables" / "acat.md").read_text()
    for heading in ("Table 5.1", "Table 5.2", "Table 5.3", "Table 5.4", "Table 5.5", "Table 5.6"):
        assert f"## {heading}" in acat
    assert "| ACAT |" in acat and "| SMIC – gradient maps |" in acat
    metrics = pd.read_csv(root / "metrics" / "acat.tsv", sep="\t")
    assert set(zip(metrics.run, metrics.model, metrics.maps)) == {
        ("full", "mtl", "none"), ("full", "acat", "counterfactual"), ("full", "smic", "counterfactual"),
        ("full", "smic", "gradient"), ("frac0.5", "mtl", "none"), ("frac0.5", "acat", "counterfactual")}
