# cfbrain: raw clinical brain scans -> counterfactual-imaging results.
# The workflow says what file is made from what; the cfbrain package says how.
from pathlib import Path

from snakemake.utils import min_version

min_version("9.0")


# Settings: the theses' defaults, then either the user's --configfile(s) or, when none is given, the demo.
# A user's config thus runs the user's datasets only (config/defaults.yaml has none).
configfile: Path(workflow.basedir) / "config" / "defaults.yaml"
if not workflow.overwrite_configfiles:

    configfile: Path(workflow.basedir) / "config" / "demo.yaml"


report: "workflow/report/workflow.rst"


include: "workflow/rules/snakemake_fixes.smk"
include: "workflow/rules/common.smk"
include: "workflow/rules/synth.smk"
include: "workflow/rules/ingest.smk"
include: "workflow/rules/register.smk"
include: "workflow/rules/preprocess.smk"
include: "workflow/rules/classify.smk"
include: "workflow/rules/saliency.smk"
include: "workflow/rules/anomaly.smk"
include: "workflow/rules/mri.smk"


rule all:
    input:
        all_targets(),
    default_target: True
