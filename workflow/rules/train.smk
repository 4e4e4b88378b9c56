# One training job per run of the plan (backbone role x kind x setting x expansion x seed). The run folder keeps
# its checkpoint, so a killed job resumes (`--resume`) when it is run again.

from repro.workflow import GUIDED, GUIDE_SOURCE, Run


def run_of(wc):
    return Run(wc.role, wc.kind, wc.setting, int(wc.expansion), int(wc.seed))


def train_inputs(wc):
    inputs = {"cache": rules.extract.output.pointer.format(role=wc.role)}
    if wc.setting == GUIDED:
        source = Run(wc.role, GUIDE_SOURCE, "default", int(wc.expansion), int(wc.seed))
        inputs["guide"] = f"{run_path(source)}/guide.json"
    return inputs


def set_options(wc):
    return " ".join(f"--set {k}={json.dumps(v)}" for k, v in hyperparameters(config, run_of(wc)).items())


rule train:
    input:
        unpack(train_inputs),
    output:
        summary=f"{RUNS}/{{role}}/{{kind}}/{{setting}}/x{{expansion}}/s{{seed}}/train.json",
    params:
        run_dir=lambda wc, output: str(Path(output.summary).parent),
        hparams=set_options,
        guide=lambda wc, input: f"--guide {input.guide}" if "guide" in input.keys() else "",
        t=config["train"],
        labels=lambda wc: f"--label config={config['name']} --label run={run_of(wc).id} --label setting={wc.setting}",
    log:
        f"{RUNS}/logs/train/{{role}}-{{kind}}-{{setting}}-x{{expansion}}-s{{seed}}.log",
    benchmark:
        f"{RUNS}/benchmarks/train/{{role}}-{{kind}}-{{setting}}-x{{expansion}}-s{{seed}}.tsv"
    threads: 2
    resources:
        mem_mb=8000,
    shell:
        "OMP_NUM_THREADS={threads} {PY} train --cache {input.cache} --kind {wildcards.kind} --expansion {wildcards.expansion} "
        "{params.hparams} {params.guide} --steps {params.t[steps]} --batch-size {params.t[batch_size]} "
        "--lr {params.t[lr]} --warmup {params.t[warmup]} --seed {wildcards.seed} {params.labels} "
        "--out {params.run_dir} --resume --quiet > {log} 2>&1"


rule guide:
    input:
        summary=f"{RUNS}/{{role}}/{GUIDE_SOURCE}/default/x{{expansion}}/s{{seed}}/train.json",
    output:
        guide=f"{RUNS}/{{role}}/{GUIDE_SOURCE}/default/x{{expansion}}/s{{seed}}/guide.json",
    params:
        run_dir=lambda wc, input: str(Path(input.summary).parent),
        test_limit=lambda wc: backbone(wc.role)["test_limit"] or "all",
        data_root=lambda wc: data_root_option(wc.role),
    log:
        f"{RUNS}/logs/guide/{{role}}-x{{expansion}}-s{{seed}}.log",
    benchmark:
        f"{RUNS}/benchmarks/guide/{{role}}-x{{expansion}}-s{{seed}}.tsv"
    threads: 2
    resources:
        mem_mb=8000,
    shell:
        "OMP_NUM_THREADS={threads} {PY} guide --from {params.run_dir} --no-relu --cache-root {CACHE} {params.data_root} "
        "--test-limit {params.test_limit} "
        "--device {config[device]} --quiet --out {output.guide} > {log} 2>&1"
