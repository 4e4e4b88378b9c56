# One job per run, trained or imported: every evaluation the plan asks of it (one process, so the backbone loads
# once), each written to <run>/eval/<eval>.json with its provenance; index.json lists them. It reads the role's
# extracted splits and head features (rules extract and head_features) and extracts nothing itself.


rule evaluate:
    input:
        unpack(evaluate_inputs),
    output:
        index=f"{RUNS}/{{run}}/eval/index.json",
    log:
        f"{RUNS}/logs/evaluate/{{run}}.log",
    benchmark:
        f"{RUNS}/benchmarks/evaluate/{{run}}.tsv"
    wildcard_constraints:
        run=r"(language|vision)/.+",
    conda:
        ENV
    threads: 1
    resources:
        mem_mb=8000,
        runtime=120,
        gpu=GPUS,
    params:
        run_dir=lambda wc, input: str(Path(input.summary).parent),
        out_dir=lambda wc, output: str(Path(output.index).parent),
        evals=lambda wc: eval_options(wc.run),
        settings=eval_settings(),
        test_limit=lambda wc: test_limit(role_of(wc.run)),
        data_root=lambda wc: data_root_option(role_of(wc.run)),
        features=lambda wc, input: f"--head-features {input.features}" if "features" in input.keys() else "",
        cache=CACHE,
        device=DEVICE,
    shell:
        "OMP_NUM_THREADS={threads} python -m repro.cli evaluate --run {params.run_dir} {params.evals} "
        "--split-cache train={input.train} --split-cache test={input.test} {params.features} "
        "--out {params.out_dir} --index {output.index} --test-limit {params.test_limit} {params.settings} "
        "--cache-root {params.cache} {params.data_root} --device {params.device} --quiet > {log} 2>&1"
