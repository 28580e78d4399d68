import pandas as pd

from cfbrain.provenance import snakemake_job

with snakemake_job(snakemake) as job:
    tables = [pd.read_csv(p, sep="\t", keep_default_na=False) for p in snakemake.input]
    pd.concat(tables, ignore_index=True).to_csv(snakemake.output[0], sep="\t", index=False)
