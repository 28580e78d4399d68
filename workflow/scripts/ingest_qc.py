import pandas as pd

from cfbrain.convert.exclusions import ingest_status, read_status_tables
from cfbrain.provenance import snakemake_job

with snakemake_job(snakemake) as job:
    inputs = snakemake.input
    converted = read_status_tables(inputs.statuses)
    review = pd.read_csv(inputs.review, sep="\t") if "review" in inputs.keys() else None
    table = ingest_status(pd.read_csv(inputs.series, sep="\t", keep_default_na=False),
                          pd.read_csv(inputs.files, sep="\t", keep_default_na=False), converted, review)
    table.to_csv(snakemake.output.table, sep="\t", index=False)
    job.log.info("%d series kept", int(((table.unit == "series") & (table.status == "kept")).sum()))
