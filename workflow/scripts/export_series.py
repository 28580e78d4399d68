from cfbrain.dicom.export import export_scan
from cfbrain.dicom.pseudonymise import PseudonymKey
from cfbrain.provenance import snakemake_job

with snakemake_job(snakemake) as job:
    params = snakemake.params
    job.extra["sources"] = export_scan(params.manifest, snakemake.wildcards.scan, snakemake.output[0],
                                       PseudonymKey.load(params.key))
