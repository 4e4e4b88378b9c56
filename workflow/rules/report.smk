# Aggregation into one tidy CSV and the figure data, then tables, figures and the audit. Tables, figures and
# the audit read only committed files, so a fresh clone rebuilds any of them in seconds without training.


rule aggregate:
    input:
        aggregate_inputs,
    output:
        csv=f"{RESULTS}/metrics.csv",
        **rebuild_record("aggregate"),
    params:
        record=lambda wc, output: record_option(output),
    log:
        f"{RUNS}/logs/aggregate.log",
    resources:
        mem_mb=2000,
        runtime=10,
    conda:
        ENV
    shell:
        "python -m repro.cli aggregate {input} --out {output.csv} {params.record} > {log} 2>&1"


rule figure_data:
    input:
        aggregate_inputs,
    output:
        *[f"{RESULTS}/figure_data/{name}.json" for name in FIGURE_DATA],
        **rebuild_record("figure_data"),
    params:
        out_dir=lambda wc, output: str(Path(output[0]).parent),
        record=lambda wc, output: record_option(output),
    log:
        f"{RUNS}/logs/figure_data.log",
    resources:
        mem_mb=2000,
        runtime=10,
    conda:
        ENV
    shell:
        "python -m repro.cli report figure-data {input} --out {params.out_dir} {params.record} > {log} 2>&1"


rule table:
    input:
        csv=rules.aggregate.output.csv,
    output:
        md=f"{RESULTS}/tables/{{table}}.md",
        tex=f"{RESULTS}/tables/{{table}}.tex",
    params:
        stem=lambda wc, output: output.md[: -len(".md")],
    log:
        f"{RESULTS}/logs/table-{{table}}.log",
    resources:
        mem_mb=2000,
        runtime=10,
    conda:
        ENV
    shell:
        "python -m repro.cli report table {wildcards.table} --metrics {input.csv} --out {params.stem} > {log} 2>&1"


rule figure:
    input:
        figure_inputs,
    output:
        pdf=f"{FIGURES}/{{figure}}.pdf",
        png=f"{FIGURES}/{{figure}}.png",
    params:
        stem=lambda wc, output: output.pdf[: -len(".pdf")],
        metrics=f"{RESULTS}/metrics.csv",
        data=f"{RESULTS}/figure_data",
    log:
        f"{RESULTS}/logs/figure-{{figure}}.log",
    resources:
        mem_mb=2000,
        runtime=10,
    conda:
        ENV
    shell:
        "python -m repro.cli report figure {wildcards.figure} --metrics {params.metrics} --data {params.data} "
        "--out {params.stem} > {log} 2>&1"


rule audit:
    input:
        csv=rules.aggregate.output.csv,
    output:
        md=f"{RESULTS}/audit.md",
    params:
        config_name=config["name"],
    log:
        f"{RESULTS}/logs/audit.log",
    resources:
        mem_mb=2000,
        runtime=10,
    conda:
        ENV
    shell:
        "python -m repro.cli audit --metrics {input.csv} --out {output.md} --config {params.config_name} > {log} 2>&1"


rule synthetic:
    input:
        config=lambda wc: synthetic_benchmarks()[wc.bench],
    output:
        table=f"{RESULTS}/{{bench}}/table.md",
        results=f"{RESULTS}/{{bench}}/results.json",
        summary=f"{RESULTS}/{{bench}}/summary.csv",
        figures=multiext(f"{FIGURES}/{{bench}}", "_l0_vs_count.pdf", "_l0_vs_count.png", "_mcc.pdf", "_mcc.png"),
    wildcard_constraints:
        bench="|".join(synthetic_benchmarks()),
    params:
        out_dir=lambda wc, output: str(Path(output.table).parent),
        figures=lambda wc, output: str(Path(output.figures[0]).parent),
    log:
        f"{RESULTS}/logs/{{bench}}.log",
    threads: 2
    resources:
        mem_mb=8000,
        runtime=120,
    conda:
        ENV
    shell:
        "OMP_NUM_THREADS={threads} python -m repro.cli synthetic --config {input.config} --out {params.out_dir} "
        "--figures {params.figures} --name {wildcards.bench} --quiet > {log} 2>&1"
