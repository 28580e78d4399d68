from cfbrain.mededit.pipeline import source_slices
from cfbrain.preprocess.mri import save_mri_slices
from cfbrain.provenance import snakemake_job

with snakemake_job(snakemake) as job:
    params = snakemake.params
    slices, table = source_slices(params.kind, params.root, params.size, params.lesion)
    save_mri_slices(snakemake.output.slices, slices)
    table.to_csv(snakemake.output.table, sep="\t", index=False)
    job.log.info("%d scans found: %s", len(table), table.groupby(["status", "reason"]).size().to_dict())
