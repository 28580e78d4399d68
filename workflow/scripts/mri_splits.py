import pandas as pd

from cfbrain.mededit.pipeline import slice_splits
from cfbrain.provenance import snakemake_job

with snakemake_job(snakemake) as job:
    status = pd.read_csv(snakemake.input.table, sep="\t", keep_default_na=False, dtype={"subject": str})
    table = slice_splits(status, snakemake.params.seed, tuple(snakemake.params.fractions))
    table.to_csv(snakemake.output[0], sep="\t", index=False)
    job.log.info("split sizes (lesion on slice): %s",
                 table.groupby(["split", table.lesion_area > 0]).size().to_dict())
