"""A user's own config and folders the synthetic cohort never produces (issue 11 parts 1 and 2).

The user's config runs the user's datasets only; a folder in which nothing is kept (MR only, localisers only,
short series only, nothing at all) still gets its full accounting, and training says in one line why it cannot run.
"""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
import yaml
from pydicom.uid import MRImageStorage, generate_uid

from conftest import REPO, write_series

pytestmark = pytest.mark.workflow


def snakemake_with(workdir: Path, *args: str) -> subprocess.CompletedProcess:
    """The README's command for one's own data: ``snakemake --cores 2 --configfile=my.yaml [...]``."""
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}"}
    return subprocess.run([sys.executable, "-m", "snakemake", "--snakefile", str(REPO / "Snakefile"), "--directory",
                           str(workdir), "--cores", "2", *args], capture_output=True, text=True, env=env)


def dry_run_jobs(workdir: Path, *args: str) -> str:
    result = snakemake_with(workdir, "--dry-run", *args)
    assert result.returncode == 0, result.stderr[-3000:]
    return result.stdout


def test_user_config_schedules_only_its_dataset(tmp_path):
    source = tmp_path / "pacs-export"
    write_series(source / "A" / "SE1", 26, n_rows=24, patient_id="AAA")
    (tmp_path / "my.yaml").write_text(yaml.safe_dump(
        {"datasets": {"mine": {"modality": "ct", "source": {"kind": "dicom_dir", "path": str(source)}}}}))
    plan = dry_run_jobs(tmp_path, f"--configfile={tmp_path / 'my.yaml'}")
    assert "dataset=mine" in plan
    for foreign in ("demo-ct", "demo-mri", "synth_ct", "synth_mri", "train_ddpm"):
        assert foreign not in plan
    # the defaults fill in what the user did not write (the theses' settings)
    config = yaml.safe_load((REPO / "config" / "defaults.yaml").read_text())
    assert config["datasets"] == {} and config["preprocess"]["target_hw"] == [500, 400]


def test_no_configfile_runs_the_demo(tmp_path):
    plan = dry_run_jobs(tmp_path)
    assert "dataset=demo-ct" in plan and "dataset=demo-mri" in plan


def mr_series(folder: Path, n: int) -> None:
    """``n`` slices of an MR series (the CT writer with the modality and SOP class changed)."""
    import pydicom
    for path in write_series(folder, n, n_rows=16, patient_id="MRONLY"):
        ds = pydicom.dcmread(path)
        ds.Modality, ds.SOPClassUID = "MR", MRImageStorage
        ds.file_meta.MediaStorageSOPClassUID = MRImageStorage
        ds.save_as(path, enforce_file_format=True)


FOLDERS = {  # dataset -> (how to fill its source folder, the exclusion reason of every series)
    "only-mr": (lambda root: [mr_series(root / f"SE{i}", 30) for i in (1, 2)], "wrong_modality"),
    "only-localisers": (lambda root: [write_series(root / f"SE{i}", 2, n_rows=16, image_type=("ORIGINAL", "PRIMARY", "LOCALIZER"),
                                                   patient_id=f"LOC{i}") for i in (1, 2)], "localiser"),
    "only-short": (lambda root: [write_series(root / f"SE{i}", 10, n_rows=16, patient_id=f"SHORT{i}",
                                              study_uid=generate_uid(entropy_srcs=[str(i)])) for i in (1, 2, 3)],
                   "split_skull_review"),
    "empty": (lambda root: None, None),
}


@pytest.fixture(scope="module")
def nothing_kept(tmp_path_factory):
    """One run over four datasets in which nothing is kept; the short-series one also has labels (training)."""
    workdir = tmp_path_factory.mktemp("nothing-kept")
    datasets = {}
    for name, (fill, _) in FOLDERS.items():
        root = workdir / "incoming" / name
        root.mkdir(parents=True)
        fill(root)
        datasets[name] = {"modality": "ct", "source": {"kind": "dicom_dir", "path": str(root)}}
    labels = workdir / "labels.tsv"
    pd.DataFrame({"patient_id": ["SHORT1", "SHORT2", "SHORT3"], "timepoint": "baseline", "lesion": [1, 0, 1],
                  "side": ["left", "none", "right"]}).to_csv(labels, sep="\t", index=False)
    datasets["only-short"]["labels"] = str(labels)
    config = {"datasets": datasets, "splits": {"seeds": [0]}, "classification": {"models": ["mtl"]}}
    (workdir / "my.yaml").write_text(yaml.safe_dump(config))
    result = snakemake_with(workdir, "--keep-going", f"--configfile={workdir / 'my.yaml'}")
    return workdir, result


@pytest.mark.parametrize("dataset", FOLDERS)
def test_every_series_is_accounted_for_when_nothing_is_kept(nothing_kept, dataset):
    workdir, _ = nothing_kept
    root = workdir / "results" / dataset
    table = pd.read_csv(root / "qc" / "exclusions.tsv", sep="\t", keep_default_na=False)
    series = table[table.unit == "series"]
    n_input = len([p for p in (workdir / "incoming" / dataset).glob("*") if p.is_dir()])
    assert len(series) == n_input
    assert not (series.status == "kept").any()
    reason = FOLDERS[dataset][1]
    if reason:
        assert set(series.reason) == {reason}
    for aggregate in ("tables/exclusions.md", "figures/exclusions.png", "qc/registration.tsv", "qc/preprocess.tsv",
                      "figures/registration_qc.png", "figures/preprocessing_montage.png", "splits/seed0.tsv"):
        assert (root / aggregate).exists(), aggregate
    assert f"{n_input} input series; 0 kept" in (root / "tables" / "exclusions.md").read_text()


def test_training_on_nothing_says_so_in_one_line(nothing_kept):
    workdir, result = nothing_kept
    assert result.returncode != 0  # the classification the user asked for cannot be made
    log = (workdir / "results" / "only-short" / "logs" / "train_classifier" / "mtl_seed0.log").read_text()
    assert "dataset only-short: 0 scans in the training split of seed 0" in log
    assert "Traceback" not in log and "Traceback" not in result.stderr

