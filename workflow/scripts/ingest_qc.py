import pandas as pd

from cfbrain.convert.exclusions import ingest_status
from cfbrain.provenance import snakemake_job

with snakemake_job(snakemake) as job:
    inputs = snakemake.input
    converted = pd.concat([pd.read_csv(p, sep="\t", keep_default_na=False) for p in inputs.statuses],
                          ignore_index=True) if inputs.statuses else pd.DataFrame(columns=["scan", "stage", "status", "reason", "detail"])
    review = pd.read_csv(inputs.review, sep="\t") if "review" in inputs.keys() else None
    table = ingest_status(pd.read_csv(inputs.series, sep="\t", keep_default_na=False),
                          pd.read_csv(inputs.files, sep="\t", keep_default_na=False), converted, review)
    table.to_csv(snakemake.output.table, sep="\t", index=False)
    job.log.info("%d series kept", int(((table.unit == "series") & (table.status == "kept")).sum()))
