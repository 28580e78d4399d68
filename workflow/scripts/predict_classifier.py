from pathlib import Path

import pandas as pd

from cfbrain.errors import require_rows
from cfbrain.provenance import snakemake_job
from cfbrain.train.stroke import predict_classifier, scan_table

with snakemake_job(snakemake) as job:
    split = pd.read_csv(snakemake.input.split, sep="\t")
    require_rows(int((split.split == "test").sum()), 1, snakemake.wildcards.dataset,
                 f"scans in the test split of seed {snakemake.wildcards.seed}")
    scans = scan_table(split, pd.read_csv(snakemake.input.labels, sep="\t"))
    tensor_dir = {Path(p).name: Path(p) for p in snakemake.input.tensors}
    table = predict_classifier(snakemake.wildcards.model, Path(snakemake.input.weights), scans, tensor_dir)
    table.assign(model=snakemake.wildcards.model, seed=int(snakemake.wildcards.seed)).to_csv(
        snakemake.output[0], sep="\t", index=False)
