from cfbrain.anomaly.pipeline import source_slices
from cfbrain.preprocess.mri import save_volume_slices
from cfbrain.provenance import snakemake_job

with snakemake_job(snakemake) as job:
    params = snakemake.params
    slices, table = source_slices(params.kind, params.root, params.size, params.synthetic_drop_slices)
    save_volume_slices(snakemake.output.slices, slices)
    table.to_csv(snakemake.output.table, sep="\t", index=False)
    job.log.info("%d cases, %d slices: %s", len(table), len(slices.scan),
                 table.groupby(["status", "reason"]).size().to_dict())
