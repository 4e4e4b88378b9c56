# Aggregation into one tidy CSV and the figure data, then tables, figures and the audit. Tables, figures and
# the audit read only committed files, so a fresh clone rebuilds any of them in seconds without training.

from repro.report.figures import FIGURES as FIGURE_SPECS
from repro.report.tables import TABLES

FIGURE_DATA = ("latents", "training_curves", "l0_distribution", "concepts")


def figure_inputs(wc):
    kind = FIGURE_SPECS[wc.figure][1]
    return [f"{RESULTS}/metrics.csv"] if kind == "metrics" else [f"{RESULTS}/figure_data/{kind}.json"]


rule aggregate:
    input:
        aggregate_inputs,
    output:
        csv=f"{RESULTS}/metrics.csv",
    log:
        f"{RUNS}/logs/aggregate.log",
    shell:
        "{PY} aggregate {input} --out {output.csv} > {log} 2>&1"


rule figure_data:
    input:
        aggregate_inputs,
    output:
        [f"{RESULTS}/figure_data/{name}.json" for name in FIGURE_DATA],
    params:
        out_dir=f"{RESULTS}/figure_data",
    log:
        f"{RUNS}/logs/figure_data.log",
    shell:
        "{PY} report figure-data {input} --out {params.out_dir} > {log} 2>&1"


rule table:
    input:
        csv=rules.aggregate.output.csv,
    output:
        md=f"{RESULTS}/tables/{{table}}.md",
        tex=f"{RESULTS}/tables/{{table}}.tex",
    params:
        stem=lambda wc, output: output.md[: -len(".md")],
    shell:
        "{PY} report table {wildcards.table} --metrics {input.csv} --out {params.stem} > /dev/null"


rule figure:
    input:
        figure_inputs,
    output:
        pdf=f"{FIGURES}/{{figure}}.pdf",
        png=f"{FIGURES}/{{figure}}.png",
    params:
        stem=lambda wc, output: output.pdf[: -len(".pdf")],
    shell:
        "{PY} report figure {wildcards.figure} --metrics {RESULTS}/metrics.csv --data {RESULTS}/figure_data "
        "--out {params.stem} > /dev/null"


rule audit:
    input:
        csv=rules.aggregate.output.csv,
    output:
        md=f"{RESULTS}/audit.md",
    shell:
        "{PY} audit --metrics {input.csv} --out {output.md} --config {config[name]} > /dev/null"
