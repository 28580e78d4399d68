from pathlib import Path

import pandas as pd

from cfbrain.errors import require_rows
from cfbrain.provenance import snakemake_job
from cfbrain.train.stroke import ClassifierSettings, scan_table, train_classifier

with snakemake_job(snakemake) as job:
    split = pd.read_csv(snakemake.input.split, sep="\t")
    require_rows(int((split.split == "train").sum()), 1, snakemake.wildcards.dataset,
                 f"scans in the training split of seed {snakemake.wildcards.seed}")
    scans = scan_table(split, pd.read_csv(snakemake.input.labels, sep="\t"))
    tensor_dir = {Path(p).name: Path(p) for p in snakemake.input.tensors}
    train_classifier(snakemake.params.model, scans, tensor_dir,
                     ClassifierSettings.from_mapping(snakemake.params.settings), snakemake.params.seed,
                     Path(snakemake.output.weights).parent, job.resume_dir(snakemake.params.checkpoints),
                     train_fraction=snakemake.params.train_fraction)
