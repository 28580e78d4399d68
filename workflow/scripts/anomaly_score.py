from pathlib import Path

import pandas as pd
import torch

from cfbrain.anomaly.pipeline import evaluation_slices, group_rows, load_run, segmentation_row
from cfbrain.errors import require_rows
from cfbrain.metrics.anomaly import ct_kid, kid_features
from cfbrain.preprocess.mri import load_volume_slices
from cfbrain.provenance import snakemake_job
from cfbrain.train.runtime import select_device

with snakemake_job(snakemake) as job:
    torch.set_num_threads(snakemake.threads)
    slices, splits = load_volume_slices(snakemake.input.slices), pd.read_csv(snakemake.input.splits, sep="\t")
    evaluation = evaluation_slices(slices, splits, snakemake.params.max_slices)
    seed = int(snakemake.wildcards.seed)
    if "kid_autoencoder" in snakemake.input.keys() or snakemake.params.inception_weights:
        extractor, features = kid_features(snakemake.params.inception_weights,
                                           snakemake.input.get("kid_autoencoder"), select_device(None))
    rows = []
    for method, path in zip(snakemake.params.methods, snakemake.input.runs):
        index, result = load_run(path)
        if snakemake.params.ct:
            generated = result.counterfactual[group_rows(index, evaluation, "test_lesion"), 0]
            real = slices.select(index[group_rows(index, evaluation, "test_healthy")]).image[:, 0]
            require_rows(min(len(generated), len(real)), 2, snakemake.wildcards.dataset,
                         "slices of positive and of negative test scans each (KID)")
            score = {"kid": ct_kid(extractor, real, generated, seed=seed), "kid_features": features,
                     "n_generated": len(generated), "n_real": len(real)}
        else:
            score = segmentation_row(slices, evaluation, index, result)
        rows.append({"method": method, "seed": seed, "evaluations": result.evaluations, **score})
        job.log.info("%s: %s", method, score)
    pd.DataFrame(rows).to_csv(snakemake.output[0], sep="\t", index=False)
