from pathlib import Path

from cfbrain.dicom.index import HeaderRules, write_index
from cfbrain.dicom.private import private_dir
from cfbrain.dicom.pseudonymise import PseudonymKey
from cfbrain.provenance import snakemake_job

with snakemake_job(snakemake) as job:
    params = snakemake.params
    private_dir(Path(params.key).parent, root=params.private)
    key = PseudonymKey.load_or_create(params.key)
    job.private_params["source_dir"] = key.source_dir(params.source_dir)
    write_index(params.source_dir, key, HeaderRules.from_config(params.rules, snakemake.input.kernel_table),
                series_tsv=snakemake.output.series, files_tsv=snakemake.output.files,
                manifest_tsv=snakemake.output.manifest, pseudonym_map_json=snakemake.output.pseudonym_map)
