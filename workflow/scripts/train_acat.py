from pathlib import Path

import pandas as pd
import torch

from cfbrain.errors import require_rows
from cfbrain.provenance import snakemake_job
from cfbrain.train.stroke import SaliencyClassifierSettings, scan_table, train_saliency_classifier

with snakemake_job(snakemake) as job:
    torch.set_num_threads(snakemake.threads)
    split = pd.read_csv(snakemake.input.split, sep="\t")
    require_rows(int((split.split == "train").sum()), 1, snakemake.wildcards.dataset,
                 f"scans in the training split of seed {snakemake.wildcards.seed}")
    scans = scan_table(split, pd.read_csv(snakemake.input.labels, sep="\t"))
    tensor_dir = {Path(p).name: Path(p) for p in snakemake.input.tensors}
    maps = {scan: Path(snakemake.input.saliency) / f"{scan}.npz" for scan in scans.scan}
    train_saliency_classifier(snakemake.wildcards.model, scans, tensor_dir, maps,
                              SaliencyClassifierSettings.from_mapping(snakemake.params.settings), snakemake.params.seed,
                              Path(snakemake.output.weights).parent, job.resume_dir(snakemake.params.checkpoints),
                              Path(snakemake.input.baseline), train_fraction=snakemake.params.train_fraction)
