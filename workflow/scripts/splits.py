import pandas as pd

from cfbrain.preprocess.splits import scan_splits
from cfbrain.provenance import snakemake_job

with snakemake_job(snakemake) as job:
    preprocessed = pd.read_csv(snakemake.input.preprocessed, sep="\t", keep_default_na=False)
    labels = pd.read_csv(snakemake.input.labels, sep="\t") if snakemake.input.get("labels") else None
    scans = sorted(preprocessed.loc[preprocessed.status == "kept", "scan"])
    table = scan_splits(scans, labels, snakemake.params.seed, tuple(snakemake.params.fractions))
    table.to_csv(snakemake.output[0], sep="\t", index=False)
    job.log.info("split sizes: %s", table.split.value_counts().to_dict())
