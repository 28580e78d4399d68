from pathlib import Path

from cfbrain.anomaly.ct import ct_slices
from cfbrain.preprocess.mri import save_volume_slices
from cfbrain.provenance import snakemake_job

with snakemake_job(snakemake) as job:
    slices, table = ct_slices({Path(p).name: Path(p) / "tensor.npz" for p in snakemake.input.tensors},
                              snakemake.params.size)
    save_volume_slices(snakemake.output.slices, slices)
    table.to_csv(snakemake.output.table, sep="\t", index=False)
    job.log.info("%d scans, %d slices", len(table), len(slices.scan))
