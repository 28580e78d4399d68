from cfbrain.convert.exclusions import read_status_tables
from cfbrain.preprocess.stage import PREPROCESS_STATUS_COLUMNS
from cfbrain.provenance import snakemake_job

with snakemake_job(snakemake) as job:
    table = read_status_tables(snakemake.input.statuses, PREPROCESS_STATUS_COLUMNS)
    table.to_csv(snakemake.output.table, sep="\t", index=False)
