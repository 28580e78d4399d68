from cfbrain.dicom.index import HeaderRules, write_index
from cfbrain.dicom.pseudonymise import PseudonymKey
from cfbrain.provenance import snakemake_job

with snakemake_job(snakemake) as job:
    params = snakemake.params
    write_index(params.source_dir, PseudonymKey.load_or_create(params.key), HeaderRules.from_config(params.rules),
                series_tsv=snakemake.output.series, files_tsv=snakemake.output.files,
                manifest_tsv=snakemake.output.manifest, pseudonym_map_json=snakemake.output.pseudonym_map)
