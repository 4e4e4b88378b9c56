# Aggregation into one tidy CSV, then tables, figures and the audit: all read only committed results, so a
# fresh clone rebuilds any of them in seconds without training.


rule aggregate:
    input:
        aggregate_inputs,
    output:
        csv=f"{RESULTS}/metrics.csv",
    log:
        f"{RUNS}/logs/aggregate.log",
    shell:
        "{PY} aggregate {input} --out {output.csv} > {log} 2>&1"


rule audit:
    input:
        csv=rules.aggregate.output.csv,
    output:
        md=f"{RESULTS}/audit.md",
    shell:
        "{PY} audit --metrics {input.csv} --out {output.md} --config {config[name]}"
