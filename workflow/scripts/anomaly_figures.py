from dataclasses import replace
from pathlib import Path

import pandas as pd

from cfbrain.anomaly.figures import counterfactual_figure
from cfbrain.anomaly.methods import METHOD_LABELS
from cfbrain.anomaly.pipeline import evaluation_slices, group_rows, load_run
from cfbrain.errors import require_rows
from cfbrain.metrics.anomaly import mean_anomaly
from cfbrain.preprocess.mri import load_volume_slices
from cfbrain.provenance import snakemake_job


def rows_of(result, rows):
    return replace(result, counterfactual=result.counterfactual[rows], anomaly_map=result.anomaly_map[rows])


with snakemake_job(snakemake) as job:
    slices, splits = load_volume_slices(snakemake.input.slices), pd.read_csv(snakemake.input.splits, sep="\t")
    evaluation = evaluation_slices(slices, splits, snakemake.params.max_slices)
    runs = {method: load_run(path) for method, path in zip(snakemake.params.methods, snakemake.input.runs)}
    index = next(iter(runs.values()))[0]
    n = snakemake.params.n_examples
    dataset, ct = snakemake.wildcards.dataset, snakemake.params.ct
    lesion, healthy = (group_rows(index, evaluation, group)[:n] for group in ("test_lesion", "test_healthy"))
    require_rows(len(lesion), 1, dataset, "test slices with a lesion (or of positive scans)")
    require_rows(len(healthy), 1, dataset, "healthy test slices")
    picked = slices.select(index[lesion])
    counterfactual_figure(picked.image, {METHOD_LABELS[m]: rows_of(r, lesion) for m, (_, r) in runs.items()},
                          Path(snakemake.output.methods), truth=None if ct else picked.lesion_mask,
                          title=f"{dataset}: test slices with a lesion" + (" (positive scans)" if ct else ""))
    picked = slices.select(index[healthy])
    difuse = rows_of(runs["difuse"][1], healthy)
    anomaly = mean_anomaly(difuse.anomaly_map, picked.brain_mask)
    counterfactual_figure(picked.image, {"Dif-fuse": difuse}, Path(snakemake.output.healthy),
                          title=f"{dataset}: healthy test slices, mean anomaly in the brain {anomaly.mean():.4f}")
