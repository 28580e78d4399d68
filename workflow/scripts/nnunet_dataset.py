import pandas as pd

from cfbrain.mededit.data import select_scans
from cfbrain.mededit.nnunet import export_training_set
from cfbrain.mededit.pipeline import split_scans
from cfbrain.preprocess.mri import load_mri_slices
from cfbrain.provenance import snakemake_job

with snakemake_job(snakemake) as job:
    splits = pd.read_csv(snakemake.input.splits, sep="\t")
    train = select_scans(load_mri_slices(snakemake.input.slices), split_scans(splits, "train"))
    export_training_set(train.image, train.lesion_mask, list(train.scan), snakemake.output[0],
                        name=f"cfbrain_{snakemake.wildcards.dataset}")
    job.log.info("nnU-Net raw dataset: %d training slices in %s", len(train.scan), snakemake.output[0])
