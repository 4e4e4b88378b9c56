# sae-repro: activation extraction -> SAE training -> evaluation -> aggregation -> tables, figures, audit.
# `snakemake --cores 2 all` builds the embedded default (config/default.yaml); `--configfile config/paper.yaml`
# the paper-scale version. Rules: workflow/rules/*.smk; the plan itself: repro/workflow.py.

from snakemake.utils import min_version

min_version("8.0")


# The default config only when none is given: `--configfile` replaces it instead of merging into it (Snakemake
# would otherwise deep-merge the two, mixing experiments of both).
if not workflow.overwrite_configfiles:

    configfile: "config/default.yaml"


include: "workflow/rules/common.smk"
include: "workflow/rules/extract.smk"
include: "workflow/rules/train.smk"
include: "workflow/rules/evaluate.smk"
include: "workflow/rules/report.smk"


rule all:
    default_target: True
    input:
        final_outputs(),
