from pathlib import Path

from cfbrain.provenance import snakemake_job
from cfbrain.register.qc import QCCriteria
from cfbrain.register.stage import registration_quality

with snakemake_job(snakemake) as job:
    qc, out = snakemake.params.qc, snakemake.output
    criteria = QCCriteria(max_rotation_deg=qc["max_rotation_deg"], scale_range=tuple(qc["scale_range"]))
    table = registration_quality(
        snakemake.params.scans, [Path(p) for p in snakemake.input.registrations],
        [Path(p) / "image.nii.gz" for p in snakemake.input.niftis], snakemake.input.statuses,
        snakemake.input.get("review"), criteria, max_clusters=qc["max_clusters"], seed=qc["seed"],
        table_tsv=out.table, clusters_tsv=out.clusters, scatter_png=out.scatter, montage_dir=out.montages)
    table.to_csv(out.table, sep="\t", index=False)
