import pandas as pd

from cfbrain.anomaly.pipeline import anomaly_splits
from cfbrain.preprocess.mri import load_volume_slices
from cfbrain.provenance import snakemake_job

with snakemake_job(snakemake) as job:
    ct_split = pd.read_csv(snakemake.input.ct_split, sep="\t") if "ct_split" in snakemake.input.keys() else None
    splits = anomaly_splits(load_volume_slices(snakemake.input.slices), snakemake.params.seed,
                            tuple(snakemake.params.fractions), ct_split)
    splits.to_csv(snakemake.output[0], sep="\t", index=False)
    job.log.info("subjects per split: %s", splits.groupby(["split", "positive"]).size().to_dict())
