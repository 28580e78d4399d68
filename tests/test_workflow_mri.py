"""The MRI track (thesis 000, MedEdit) through Snakemake: the tiny synthetic config end to end, the job plan of
the default config, and a fake ATLAS v2.0 tree through the slice rule."""
from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd
import pytest
import yaml

from cfbrain.mededit.methods import ablation_methods
from cfbrain.mededit.triplets import load_triplets
from cfbrain.preprocess.mri import load_mri_slices
from conftest import REPO

pytestmark = pytest.mark.workflow
TINY = REPO / "config" / "tiny-mri.yaml"
DATASET = "tiny-mri"
CONFIG = yaml.safe_load(TINY.read_text())
METHODS = CONFIG["mededit"]["methods"]
PAIRINGS = ["random", "counterpart"]


def snakemake(workdir: Path, configfile: Path, *args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}"}
    command = [sys.executable, "-m", "snakemake", "--snakefile", str(REPO / "Snakefile"), "--directory", str(workdir),
               "--configfile", str(configfile), "--cores", "2", *args]
    return subprocess.run(command, capture_output=True, text=True, env=env)


def job_counts(output: str) -> dict[str, int]:
    """The "Job stats" table of a Snakemake run or dry run."""
    return {m[1]: int(m[2]) for m in re.finditer(r"^(\w+)\s+(\d+)$", output, re.MULTILINE)}


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    workdir = tmp_path_factory.mktemp("tiny-mri")
    result = snakemake(workdir, TINY)
    assert result.returncode == 0, result.stderr[-3000:]
    return workdir / "results" / DATASET


def test_table_has_a_row_per_method_and_pairing_with_scores_in_range(run):
    metrics = pd.read_csv(run / "metrics" / "mededit.tsv", sep="\t")
    assert sorted(zip(metrics.pairing, metrics.method)) == sorted((p, m) for p in PAIRINGS for m in METHODS)
    for column in ("fid_mean", "fid_std", "kid_mean", "dice", "iou", "condition_box_dice", "dice_x_fid",
                   "fidelity_error"):
        assert np.isfinite(metrics[column]).all(), column
    assert (metrics.seed == 0).all()
    for column in ("dice", "iou", "condition_box_dice"):
        assert metrics[column].between(0, 1).all(), column
    assert (metrics.fid_mean >= 0).all() and (metrics.fidelity_error >= 0).all()
    counterpart, random = metrics[metrics.pairing == "counterpart"], metrics[metrics.pairing == "random"]
    assert (counterpart.n_indirect >= 1).all() and counterpart.indirect_effect.between(0, 1).all()
    assert (random.n_indirect == 0).all() and random.indirect_effect.isna().all()
    table = (run / "tables" / "mededit.md").read_text()
    for label in ("Palette", "Naïve RePaint", "SDEdit", "MedEdit"):  # mask and box rows, two pairings
        assert len(re.findall(rf"^\| {label} \| [0-9.]+ \| [0-9.e-]+ ± ", table, re.MULTILINE)) == 4, label
    assert table.count("## Bounding-box conditioning") == 2
    assert "FID/KID feature extractor: in-domain autoencoder" in table


def test_triplets_are_the_test_split(run):
    splits = pd.read_csv(run / "mri" / "splits.tsv", sep="\t")
    test = splits[splits.split == "test"]
    lesioned, healthy = set(test.scan[test.lesion_area > 0]), set(test.scan[test.lesion_area == 0])
    assert lesioned and healthy
    metrics = pd.read_csv(run / "metrics" / "mededit.tsv", sep="\t")
    for pairing in PAIRINGS:
        triplets = load_triplets(run / "counterfactuals" / pairing / "triplets.npz")
        assert sorted(triplets.mask_scan) == sorted(lesioned)
        assert (metrics.loc[metrics.pairing == pairing, "n"] == len(lesioned)).all()
        assert set(triplets.prior_scan) <= (healthy if pairing == "random" else lesioned)
    assert set(splits.groupby("subject").split.nunique()) == {1}, "a subject in two splits"


def test_every_scan_is_accounted_for(run):
    subjects = pd.read_csv(run.parents[1] / "sources" / DATASET / "subjects.tsv", sep="\t")
    table = pd.read_csv(run / "qc" / "mri_slices.tsv", sep="\t", keep_default_na=False)
    assert sorted(table.scan) == sorted(subjects.scan[subjects.dataset == "stroke"])
    slices = load_mri_slices(run / "mri" / "slices.npz")
    assert sorted(slices.scan) == sorted(table.scan[table.status == "kept"])
    size = CONFIG["mri"]["size"]
    assert slices.image.shape == (len(slices.scan), size, size)
    assert 0 <= slices.image.min() and slices.image.max() <= 1


def test_every_job_left_a_provenance_record(run):
    records = list((run / "provenance").rglob("*.json"))
    counts = pd.Series([path.parent.name for path in records]).value_counts().to_dict()
    assert counts == {"synth_mri": 1, "mri_slices": 1, "mri_truth": 1, "mri_splits": 1, "train_ddpm": 4,
                      "train_segmenter": 1, "train_feature_ae": 1, "mededit_triplets": 2,
                      "mededit_run": len(METHODS) * len(PAIRINGS), "mededit_score": 2, "mededit_table": 1,
                      "mededit_figure": 2}


def test_rerun_is_a_no_op(run):
    result = snakemake(run.parents[1], TINY, "--dry-run")
    assert result.returncode == 0 and "Nothing to be done" in result.stdout + result.stderr


def test_default_config_plans_every_method_and_ablation(tmp_path):
    config = yaml.safe_load((REPO / "config" / "demo.yaml").read_text())["mededit"]
    settings = ablation_methods()
    methods = set(config["methods"]) | {name for a in config["ablations"] for name in settings[a].values()}
    result = snakemake(tmp_path, REPO / "config" / "demo.yaml", "--dry-run", "results/demo-mri/tables/mededit.md")
    assert result.returncode == 0, result.stderr[-3000:]
    counts = job_counts(result.stdout)
    assert counts["mededit_run"] == 2 * len(methods)
    assert counts["train_ddpm"] == len({("palette" if m.startswith("palette") else "mededit") + ("_box" * ("_box" in m))
                                        for m in methods})


def test_seeds_multiply_the_denoisers_runs_and_scores(tmp_path):
    config = yaml.safe_load(TINY.read_text())
    config["mededit"]["seeds"] = [0, 1]
    configfile = tmp_path / "seeds.yaml"
    configfile.write_text(yaml.safe_dump(config, allow_unicode=True))
    result = snakemake(tmp_path, configfile, "--dry-run")
    assert result.returncode == 0, result.stderr[-3000:]
    counts = job_counts(result.stdout)
    assert counts["train_ddpm"] == 2 * 4 and counts["mededit_run"] == 2 * len(METHODS) * len(PAIRINGS)
    assert counts["mededit_score"] == 2 * 2 and counts["train_segmenter"] == 1 and counts["mededit_figure"] == 2
    assert f"results/{DATASET}/models/ddpm_mededit/seed1/final.pt" in result.stdout


def test_nnunet_dataset_is_the_training_split(run):
    result = snakemake(run.parents[1], TINY, f"results/{DATASET}/nnunet/raw")
    assert result.returncode == 0, result.stderr[-3000:]
    raw = run / "nnunet" / "raw"
    splits = pd.read_csv(run / "mri" / "splits.tsv", sep="\t")
    train = sorted(splits.scan[splits.split == "train"])
    assert yaml.safe_load((raw / "dataset.json").read_text())["numTraining"] == len(train)
    assert sorted(p.name.removesuffix(".nii.gz") for p in (raw / "labelsTr").iterdir()) == train


def test_nnunet_backend_replaces_the_trained_segmenter(tmp_path):
    config = yaml.safe_load(TINY.read_text())
    config["mededit"]["segmenter"] = {"backend": "nnunet", "nnunet": {"model_folder": str(tmp_path / "model")}}
    configfile = tmp_path / "nnunet.yaml"
    configfile.write_text(yaml.safe_dump(config))
    result = snakemake(tmp_path, configfile, "--dry-run")
    assert result.returncode == 0, result.stderr[-3000:]
    counts = job_counts(result.stdout)
    assert "train_segmenter" not in counts and counts["mededit_score"] == 2
    del config["mededit"]["segmenter"]["nnunet"]
    configfile.write_text(yaml.safe_dump(config))
    result = snakemake(tmp_path, configfile, "--dry-run")
    assert result.returncode != 0 and "'nnunet' is a required property" in result.stdout + result.stderr


def _nifti(path: Path, data: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    nib.Nifti1Image(data, np.eye(4)).to_filename(path)


def test_fake_atlas_tree_runs_through_mri_slices(tmp_path):
    """ATLAS v2.0 BIDS names; slice 95 of 100 axial planes; one session without its lesion mask."""
    root = tmp_path / "ATLAS_2" / "Training" / "R001"
    rng = np.random.default_rng(0)
    head = np.zeros((40, 48, 100), np.float32)
    head[8:32, 8:40, :] = 1.0
    for n, subject in enumerate(("sub-r001s001", "sub-r001s002", "sub-r001s003")):
        anat = root / subject / "ses-1" / "anat"
        stem = f"{subject}_ses-1_space-MNI152NLin2009aSym"
        _nifti(anat / f"{stem}_T1w.nii.gz", head * rng.uniform(50, 100, head.shape).astype(np.float32))
        if n < 2:
            lesion = np.zeros(head.shape, np.uint8)
            lesion[15:20 + 5 * n, 20:25, 93:98] = 1
            _nifti(anat / f"{stem}_label-L_desc-T1lesion_mask.nii.gz", lesion)
    config = {**CONFIG, "datasets": {"fake-atlas": {"modality": "mri", "source": {"kind": "atlas", "path": str(root)}}}}
    configfile = tmp_path / "config.yaml"
    configfile.write_text(yaml.safe_dump(config, allow_unicode=True))
    result = snakemake(tmp_path, configfile, "results/fake-atlas/mri/slices.npz")
    assert result.returncode == 0, result.stderr[-3000:]
    table = pd.read_csv(tmp_path / "results" / "fake-atlas" / "qc" / "mri_slices.tsv", sep="\t",
                        keep_default_na=False).set_index("scan")
    assert table.status.to_dict() == {"sub-r001s001_ses-1": "kept", "sub-r001s002_ses-1": "kept",
                                      "sub-r001s003_ses-1": "excluded"}
    assert table.loc["sub-r001s003_ses-1", "reason"] == "mask_missing"
    assert table.loc["sub-r001s001_ses-1", "subject"] == "sub-r001s001"
    slices = load_mri_slices(tmp_path / "results" / "fake-atlas" / "mri" / "slices.npz")
    assert slices.image.shape == (2, CONFIG["mri"]["size"], CONFIG["mri"]["size"])
    assert (slices.lesion_mask.reshape(2, -1).sum(1) > 0).all()
