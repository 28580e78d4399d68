import pandas as pd

from cfbrain.preprocess.stage import PREPROCESS_STATUS_COLUMNS
from cfbrain.provenance import snakemake_job

with snakemake_job(snakemake) as job:
    tables = [pd.read_csv(p, sep="\t", keep_default_na=False) for p in snakemake.input.statuses]
    table = pd.concat(tables, ignore_index=True) if tables else pd.DataFrame(columns=PREPROCESS_STATUS_COLUMNS)
    table.to_csv(snakemake.output.table, sep="\t", index=False)
