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
    maps = ({scan: Path(snakemake.input.saliency) / f"{scan}.npz" for scan in scans.scan}
            if "saliency" in snakemake.input.keys() else None)
    table = predict_classifier(snakemake.wildcards.model, Path(snakemake.input.weights), scans, tensor_dir, maps)
    table = table.assign(model=snakemake.wildcards.model, seed=int(snakemake.wildcards.seed))
    if "run" in snakemake.wildcards.keys():
        table = table.assign(run=snakemake.wildcards.run, maps=snakemake.wildcards.maps)
    table.to_csv(snakemake.output[0], sep="\t", index=False)
