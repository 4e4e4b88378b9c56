# Aggregation into one tidy CSV and the figure data, then tables, figures and the audit. Tables, figures and
# the audit read only committed files, so a fresh clone rebuilds any of them in seconds without training.


rule aggregate:
    input:
        aggregate_inputs,
    output:
        **rebuild_record("aggregate"),
        csv=f"{RESULTS}/metrics.csv",
    log:
        f"{RUNS}/logs/aggregate.log",
    conda:
        ENV
    resources:
        mem_mb=2000,
        runtime=10,
    params:
        record=lambda wc, output: record_option(output),
    shell:
        "python -m repro.cli aggregate {input} --out {output.csv} {params.record} > {log} 2>&1"


rule figure_data:
    input:
        aggregate_inputs,
    output:
        *[f"{RESULTS}/figure_data/{name}.json" for name in FIGURE_DATA],
        **rebuild_record("figure_data"),
    log:
        f"{RUNS}/logs/figure_data.log",
    conda:
        ENV
    resources:
        mem_mb=2000,
        runtime=10,
    params:
        out_dir=lambda wc, output: str(Path(output[0]).parent),
        record=lambda wc, output: record_option(output),
    shell:
        "python -m repro.cli report figure-data {input} --out {params.out_dir} {params.record} > {log} 2>&1"


rule table:
    input:
        csv=rules.aggregate.output.csv,
    output:
        md=f"{RESULTS}/tables/{{table}}.md",
        tex=f"{RESULTS}/tables/{{table}}.tex",
    log:
        f"{RESULTS}/logs/table-{{table}}.log",
    conda:
        ENV
    resources:
        mem_mb=2000,
        runtime=10,
    params:
        stem=lambda wc, output: output.md[: -len(".md")],
    shell:
        "python -m repro.cli report table {wildcards.table} --metrics {input.csv} --out {params.stem} > {log} 2>&1"


rule figure:
    input:
        figure_inputs,
    output:
        pdf=f"{FIGURES}/{{figure}}.pdf",
        png=f"{FIGURES}/{{figure}}.png",
    log:
        f"{RESULTS}/logs/figure-{{figure}}.log",
    conda:
        ENV
    resources:
        mem_mb=2000,
        runtime=10,
    params:
        stem=lambda wc, output: output.pdf[: -len(".pdf")],
        metrics=f"{RESULTS}/metrics.csv",
        data=f"{RESULTS}/figure_data",
    shell:
        "python -m repro.cli report figure {wildcards.figure} --metrics {params.metrics} --data {params.data} "
        "--out {params.stem} > {log} 2>&1"


rule audit:
    input:
        csv=rules.aggregate.output.csv,
    output:
        md=f"{RESULTS}/audit.md",
    log:
        f"{RESULTS}/logs/audit.log",
    conda:
        ENV
    resources:
        mem_mb=2000,
        runtime=10,
    params:
        config_name=config["name"],
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
    log:
        f"{RESULTS}/logs/{{bench}}.log",
    wildcard_constraints:
        bench="|".join(synthetic_benchmarks()),
    conda:
        ENV
    threads: 2
    resources:
        mem_mb=8000,
        runtime=120,
    params:
        out_dir=lambda wc, output: str(Path(output.table).parent),
        figures=lambda wc, output: str(Path(output.figures[0]).parent),
    shell:
        "OMP_NUM_THREADS={threads} python -m repro.cli synthetic --config {input.config} --out {params.out_dir} "
        "--figures {params.figures} --name {wildcards.bench} --quiet > {log} 2>&1"
