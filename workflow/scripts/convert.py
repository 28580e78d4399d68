from cfbrain.convert.exclusions import SliceCountRules
from cfbrain.convert.stage import convert_scan
from cfbrain.provenance import snakemake_job

with snakemake_job(snakemake) as job:
    convert_scan(snakemake.wildcards.scan, snakemake.input.dicom, snakemake.output.nifti, snakemake.output.status,
                 SliceCountRules(**snakemake.params.rules), max_noise_hu=snakemake.params.max_noise_hu)
