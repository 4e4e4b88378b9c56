# One job per run: every evaluation the plan asks of it (one process, so the backbone loads once), each
# written to <run>/eval/<eval>.json with its provenance; index.json lists them.


rule evaluate:
    input:
        summary=f"{RUN_PATTERN}/train.json",
    output:
        index=f"{RUN_PATTERN}/eval/index.json",
    params:
        run_dir=lambda wc, input: str(Path(input.summary).parent),
        out_dir=lambda wc, output: str(Path(output.index).parent),
        evals=eval_options,
        settings=eval_settings(),
        test_limit=lambda wc: test_limit(wc.role),
        data_root=lambda wc: data_root_option(wc.role),
        cache=CACHE,
        device=DEVICE,
    log:
        f"{RUNS}/logs/evaluate/{RUN_NAME}.log",
    benchmark:
        f"{RUNS}/benchmarks/evaluate/{RUN_NAME}.tsv"
    threads: 1
    resources:
        mem_mb=8000,
        runtime=120,
        gpu=GPUS,
    conda:
        ENV
    shell:
        "OMP_NUM_THREADS={threads} python -m repro.cli evaluate --run {params.run_dir} {params.evals} "
        "--out {params.out_dir} --index {output.index} --test-limit {params.test_limit} {params.settings} "
        "--cache-root {params.cache} {params.data_root} --device {params.device} --quiet > {log} 2>&1"
