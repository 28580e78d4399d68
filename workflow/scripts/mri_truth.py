from cfbrain.mededit.pipeline import source_spec
from cfbrain.provenance import snakemake_job
from cfbrain.synth.mri import save_truth_slices, truth_slices

with snakemake_job(snakemake) as job:
    lesion = snakemake.params.lesion
    truth = truth_slices(snakemake.input.source, lesion, source_spec("synthetic_mri", snakemake.params.size, lesion))
    save_truth_slices(snakemake.output[0], truth)
    job.log.info("ground truth of %d lesioned scans", len(truth.scan))
