"""Thesis 003 chapter 6 (Dif-fuse) through Snakemake: config/tiny-anomaly.yaml (BraTS-like and WMH-like
datasets) run once to Table 6.1 and the figures, then checked; a rerun is a no-op; the demo (with its CT
dataset) and the paper config plan the chapter."""
from __future__ import annotations

import re

import pandas as pd
import pytest
import yaml

from cfbrain.anomaly.methods import METHOD_LABELS
from cfbrain.preprocess.mri import load_volume_slices
from cfbrain.synth.mri import read_subjects
from conftest import REPO
from test_workflow_mri import job_counts, snakemake

pytestmark = pytest.mark.workflow
TINY = REPO / "config" / "tiny-anomaly.yaml"
CONFIG = yaml.safe_load(TINY.read_text())
METHODS = CONFIG["anomaly"]["methods"]
BRATS, WMH = "tiny-an-brats", "tiny-an-wmh"
FIGURES = {BRATS: ["anomaly_methods", "anomaly_healthy", "anomaly_grid", "anomaly_depths"],
           WMH: ["anomaly_methods", "anomaly_healthy"]}
# one thread per job: two jobs side by side (the tiny jobs are mostly start-up)
THREADS = ["--set-threads", *(f"{rule}=1" for rule in ("train_healthy_ddpm", "train_slice_classifier",
                                                        "train_plane_autoencoder", "anomaly_saliency", "anomaly_grid",
                                                        "anomaly_run"))]


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    workdir = tmp_path_factory.mktemp("tiny-anomaly")
    result = snakemake(workdir, TINY, *THREADS)
    assert result.returncode == 0, result.stderr[-3000:]
    return workdir


def test_table_has_every_method_and_dataset_column(run):
    table = (run / "results" / BRATS / "tables" / "anomaly.md").read_text()
    header = next(line for line in table.splitlines() if line.startswith("| Method"))
    assert header == ("| Method | BraTS Dice ↑ | BraTS IoU ↑ | WMH Dice ↑ | WMH IoU ↑ | BraTS Dice, best-on-test threshold "
                      "| BraTS IoU, best-on-test threshold | WMH Dice, best-on-test threshold "
                      "| WMH IoU, best-on-test threshold |")
    for method in METHODS:
        assert re.search(rf"^\| {re.escape(METHOD_LABELS[method])} \| [0-9.]+ ", table, re.MULTILINE), method
    assert not (run / "results" / WMH / "tables" / "anomaly.md").exists()  # WMH is a column of BraTS's table


def test_every_method_and_dataset_has_scores(run):
    for dataset in (BRATS, WMH):
        scores = pd.read_csv(run / "results" / dataset / "metrics" / "anomaly" / "seed0.tsv", sep="\t")
        assert sorted(scores.method) == sorted(METHODS)
        assert scores[["dice", "iou", "dice_best_on_test"]].apply(lambda c: c.between(0, 1)).all().all(), dataset
        assert (scores.dice_best_on_test >= scores.dice - 1e-9).all()
        assert (scores.n_test > 0).all() and (scores.n_healthy > 0).all()
        assert scores.healthy_mean_anomaly.between(0, 1).all()
    per_seed = pd.read_csv(run / "results" / BRATS / "metrics" / "anomaly.tsv", sep="\t")
    assert {"brats_dice", "wmh_dice", "wmh_iou_best_on_test"} <= set(per_seed.columns) and len(per_seed) == len(METHODS)


def test_grid_chooses_one_cell_used_by_every_mri_run(run):
    grid = pd.read_csv(run / "results" / BRATS / "metrics" / "anomaly" / "grid.tsv", sep="\t")
    settings = CONFIG["anomaly"]["grid"]
    assert len(grid) == len(settings["inversion_depths"]) * len(settings["percentiles"]) and grid.chosen.sum() == 1
    for dataset in (BRATS, WMH):
        log = (run / "results" / dataset / "logs" / "anomaly_run" / "seed0_difuse.log").read_text()
        chosen = grid[grid.chosen].iloc[0]
        assert f"K {int(chosen.inversion_depth)}, percentile {chosen.percentile:g}" in log


def test_figures_exist(run):
    for dataset, names in FIGURES.items():
        for name in names:
            assert (run / "results" / dataset / "figures" / f"{name}.png").stat().st_size > 1000, (dataset, name)


def test_exclusion_table_accounts_for_every_case(run):
    subjects = read_subjects(run / "sources" / BRATS)
    for dataset, cohort in ((BRATS, "tumour"), (WMH, "wmh")):
        table = pd.read_csv(run / "results" / dataset / "qc" / "anomaly_slices.tsv", sep="\t", keep_default_na=False)
        assert sorted(table.scan) == sorted(subjects.scan[subjects.dataset == cohort])
        slices = load_volume_slices(run / "results" / dataset / "anomaly" / "slices.npz")
        kept = table[table.status == "kept"]
        assert sorted(set(slices.scan)) == sorted(kept.scan) and len(slices.scan) == kept.n_slices.sum()
        assert slices.contrasts == ("flair", "t1", "t1gd", "t2")
    assert load_volume_slices(run / "results" / WMH / "anomaly" / "slices.npz").observed == ("flair", "t1")


def test_rerun_is_a_no_op(run):
    result = snakemake(run, TINY, "--dry-run")
    assert result.returncode == 0 and "Nothing to be done" in result.stdout + result.stderr


def test_demo_plans_chapter_6(tmp_path):
    result = snakemake(tmp_path, REPO / "config" / "demo.yaml", "--dry-run")
    assert result.returncode == 0, result.stderr[-3000:]
    seeds = yaml.safe_load((REPO / "config" / "demo.yaml").read_text())["anomaly"]["seeds"]
    counts = job_counts(result.stdout)
    assert counts["anomaly_table"] == 2 and counts["anomaly_grid"] == 1  # BraTS-like (with WMH and CT KID), CT
    assert counts["train_healthy_ddpm"] == 2 * len(seeds)  # BraTS-like and CT; WMH uses BraTS's models
    assert counts["anomaly_ct_slices"] == 1 and counts["train_kid_autoencoder"] == len(seeds)
    assert "mededit_table" in counts  # the MedEdit dataset still runs


def test_paper_config_plans_chapter_6(tmp_path):
    config = yaml.safe_load((REPO / "config" / "paper-difuse.yaml").read_text())
    for name, dataset in config["datasets"].items():
        (tmp_path / name).mkdir()
        dataset["source"]["path"] = str(tmp_path / name)
        if dataset.get("labels"):
            dataset["labels"] = str(tmp_path / "labels.tsv")
    (tmp_path / "labels.tsv").write_text("patient_id\tlesion\n")
    configfile = tmp_path / "paper.yaml"
    configfile.write_text(yaml.safe_dump(config, allow_unicode=True))
    result = snakemake(tmp_path, configfile, "--dry-run", "results/brats2021/qc/anomaly_slices.tsv",
                       "results/wmh/qc/anomaly_slices.tsv")
    assert result.returncode == 0, result.stderr[-3000:]
    assert job_counts(result.stdout)["anomaly_slices"] == 2
