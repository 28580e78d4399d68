"""The chapter-5 tables from hand-made predictions and maps: ACAT tables (5.1-5.6) and the hit-score report."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from cfbrain.saliency.maps import Saliency, write_saliency
from cfbrain.saliency.report import method_rows, saliency_markdown, search_outcome
from cfbrain.saliency.territories import TERRITORY_LABELS, write_territory_map
from cfbrain.train.acat_report import acat_report, per_seed_metrics, row_name


def predictions(run: str, model: str, maps: str, seed: int, correct: int, n: int = 4) -> pd.DataFrame:
    """``n`` test scans (labels 0, 1, 2, 3 ...), the first ``correct`` predicted right, the rest as class 0."""
    labels = np.arange(n) % 4
    pred = np.where(np.arange(n) < correct, labels, (labels + 1) % 4)
    return pd.DataFrame({"scan": [f"s{i}" for i in range(n)], "label": labels, "pred": pred,
                         "size": [0, 1, 3, 4][:n], "run": run, "model": model, "maps": maps, "seed": seed})


@pytest.fixture
def acat_predictions():
    frames = [predictions("full", "mtl", "none", seed, correct=2) for seed in (0, 1)]
    frames += [predictions("full", "acat", "counterfactual", seed, correct=3 + seed) for seed in (0, 1)]
    frames += [predictions("full", "smic", "gradient", seed, correct=1) for seed in (0, 1)]
    frames += [predictions("frac0.5", "mtl", "none", 0, correct=1), predictions("frac0.5", "acat", "counterfactual", 0, correct=2)]
    return pd.concat(frames, ignore_index=True)


def test_acat_tables_mean_and_error_over_seeds(acat_predictions):
    markdown, per_seed = acat_report(acat_predictions, None, "demo", "counterfactual")
    table_5_1 = markdown.split("## Table 5.1")[1].split("##")[0]
    assert "| ACAT | 87.5 ± 12.5 |" in table_5_1  # seeds: 3/4 and 4/4 correct
    assert "| Baseline (hemisphere CNN) | 50.0 ± 0.0 |" in table_5_1
    assert "| SMIC" not in table_5_1  # other maps go to Table 5.3
    assert "| SMIC – gradient maps | 25.0 ± 0.0 |" in markdown.split("## Table 5.3")[1]
    limited = markdown.split("## Table 5.5")[1]
    assert "50 % of the training scans" in limited and "| ACAT | 50.0 |" in limited
    assert set(per_seed.run) == {"full", "frac0.5"} and len(per_seed) == 8


def test_acat_table_by_infarct_size(acat_predictions):
    markdown, _ = acat_report(acat_predictions, None, "demo", "counterfactual")
    table_5_2 = markdown.split("## Table 5.2")[1].split("##")[0]
    assert "| model | no lesion | IS-1 | IS-3 | IS-4 |" in table_5_2
    # baseline: scans 0 (none) and 1 (IS-1) right, 2 (IS-3) and 3 (IS-4) wrong, in both seeds
    assert "| Baseline (hemisphere CNN) | 100.0 ± 0.0 | 100.0 ± 0.0 | 0.0 ± 0.0 | 0.0 ± 0.0 |" in table_5_2


def test_variance_table_averages_seeds():
    variances = pd.DataFrame({"layer": [1, 2, 1, 2], "baseline_noise0": [1.0, 2.0, 3.0, 4.0],
                              "acat_noise0": [0.5, 0.5, 0.5, 0.5], "seed": [0, 0, 1, 1]})
    markdown, _ = acat_report(predictions("full", "mtl", "none", 0, 2), variances, "demo", "counterfactual")
    table = markdown.split("## Table 5.6")[1]
    assert "| σ²,1 | 2 | 0.5 |" in table and "| σ²,2 | 3 | 0.5 |" in table  # 3 significant digits


def test_row_names_and_per_seed_keys():
    assert row_name("acat", "counterfactual", "counterfactual") == "ACAT"
    assert row_name("hsm_saliency", "latent_shift", "counterfactual") == "HSM (branch reads the map) – latent shift maps"
    per_seed = per_seed_metrics(predictions("full", "mtl", "none", 3, correct=4))
    assert (per_seed.seed.item(), per_seed.accuracy.item()) == (3, 1.0)


def test_search_outcome_reads_where_each_search_ended():
    values = np.zeros((1, 2, 2), np.float16)
    assert search_outcome(Saliency("counterfactual", values, 0.9, {"to_none": np.array([0.9, 0.5, 0.2])})) == pytest.approx(0.2)
    assert search_outcome(Saliency("latent_shift", values, 0.9, {"shift": np.array([0.8, 0.1, 0.3])})) == pytest.approx(0.1)
    assert np.isnan(search_outcome(Saliency("gradient", values, 0.9)))


def test_saliency_report_scores_hits_per_method_and_seed(tmp_path):
    """Two positive test scans with a left-MCA lesion; the map of method "a" peaks in left MCA for both, that of
    "b" in the right PCA for one: hit scores 100 % and 50 %. Negative and training scans are not scored."""
    labels_map = np.zeros((2, 4, 4), np.uint8)
    labels_map[:, :, :2] = TERRITORY_LABELS["MCA", "left"]
    labels_map[:, :, 2:] = TERRITORY_LABELS["PCA", "right"]
    scans = pd.DataFrame({"scan": ["p1", "p2", "n1", "t1"], "split": ["test", "test", "test", "train"],
                          "lesion": [1, 1, 0, 1], "side": ["left", "left", "none", "left"],
                          "territory": ["MCA", "MCA", "", "MCA"]})
    territories, maps_dirs = {}, {}
    for scan in scans.scan:
        territories[scan] = write_territory_map(tmp_path / "territories" / f"{scan}.npz", labels_map)
    for method, peak_columns in (("a", {"p1": 0, "p2": 1}), ("b", {"p1": 0, "p2": 3})):
        maps_dirs[method, 0] = tmp_path / method
        for scan in scans.scan:
            values = np.zeros((2, 4, 4), np.float16)
            values[1, 2, peak_columns.get(scan, 0)] = 1
            write_saliency(tmp_path / method / f"{scan}.npz", Saliency(method, values, 0.7))
    rows = pd.concat([method_rows(m, 0, scans, maps_dirs[m, 0], territories) for m in ("a", "b")])
    markdown, per_seed = saliency_markdown(rows, "demo", has_territories=True)
    assert sorted(rows.scan.unique()) == ["p1", "p2"]
    assert per_seed.set_index("method").hit_score.to_dict() == {"a": 1.0, "b": 0.5}
    assert "| a | 100.0 |" in markdown and "| b | 50.0 |" in markdown
