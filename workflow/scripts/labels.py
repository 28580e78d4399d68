import pandas as pd

from cfbrain.dicom.labels import pseudonymise_labels
from cfbrain.dicom.pseudonymise import PseudonymKey
from cfbrain.provenance import snakemake_job

with snakemake_job(snakemake) as job:
    raw = pd.read_csv(snakemake.params.raw, sep="\t", dtype={"patient_id": str, "study_uid": str}, keep_default_na=False)
    labels = pseudonymise_labels(raw, PseudonymKey.load(snakemake.params.key))
    labels.to_csv(snakemake.output[0], sep="\t", index=False)
