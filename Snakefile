# cfbrain: raw clinical brain scans -> counterfactual-imaging results.
# The workflow says what file is made from what; the cfbrain package says how.
from snakemake.utils import min_version

min_version("9.0")


configfile: "config/config.yaml"


report: "workflow/report/workflow.rst"


include: "workflow/rules/snakemake_fixes.smk"
include: "workflow/rules/common.smk"
include: "workflow/rules/synth.smk"
include: "workflow/rules/ingest.smk"
include: "workflow/rules/register.smk"
include: "workflow/rules/preprocess.smk"
include: "workflow/rules/classify.smk"
include: "workflow/rules/mri.smk"


rule all:
    input:
        all_targets(),
    default_target: True
