# One job per run: every evaluation the plan asks of it (one process, so the backbone loads once), each
# written to <run>/eval/<eval>.json with its provenance; index.json lists them.


def run_evals(wc):
    return sorted(PLAN.evals[run_of(wc).id])


rule evaluate:
    input:
        summary=f"{RUNS}/{{role}}/{{kind}}/{{setting}}/x{{expansion}}/s{{seed}}/train.json",
    output:
        index=f"{RUNS}/{{role}}/{{kind}}/{{setting}}/x{{expansion}}/s{{seed}}/eval/index.json",
    params:
        run_dir=lambda wc, input: str(Path(input.summary).parent),
        out_dir=lambda wc, output: str(Path(output.index).parent),
        evals=lambda wc: " ".join(f"--eval {e}" for e in run_evals(wc)),
        test_limit=lambda wc: backbone(wc.role)["test_limit"] or "all",
        data_root=lambda wc: data_root_option(wc.role),
        e={"threshold": 0.2, "top_k": 50, "lm_texts": 64, "batch_size": 32, **config["evaluation"]},
        ns=" ".join(map(str, config["evaluation"].get("ns", [1, 5, 10, 50]))),
    log:
        f"{RUNS}/logs/evaluate/{{role}}-{{kind}}-{{setting}}-x{{expansion}}-s{{seed}}.log",
    benchmark:
        f"{RUNS}/benchmarks/evaluate/{{role}}-{{kind}}-{{setting}}-x{{expansion}}-s{{seed}}.tsv"
    threads: 1
    resources:
        mem_mb=8000,
    shell:
        "OMP_NUM_THREADS={threads} {PY} evaluate --run {params.run_dir} {params.evals} --out {params.out_dir} --index {output.index} "
        "--test-limit {params.test_limit} --threshold {params.e[threshold]} --ns {params.ns} "
        "--top-k {params.e[top_k]} --lm-texts {params.e[lm_texts]} --batch-size {params.e[batch_size]} "
        "--cache-root {CACHE} {params.data_root} --device {config[device]} --quiet > {log} 2>&1"
