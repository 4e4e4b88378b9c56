# One training job per run of the plan (backbone role x kind x setting x expansion x seed). The run folder keeps
# its checkpoint, so a killed job resumes (`--resume`) when it is run again. Guided runs read k from the
# sparsemax run's guidance file (rule guide).


rule train:
    input:
        unpack(train_inputs),
    output:
        summary=f"{RUN_PATTERN}/train.json",
    log:
        f"{RUNS}/logs/train/{RUN_NAME}.log",
    benchmark:
        f"{RUNS}/benchmarks/train/{RUN_NAME}.tsv"
    conda:
        ENV
    # One thread per job: on 2 cores two 1-thread jobs train 1.26 x as many SAEs per hour as one 2-thread job
    # (vision TopK k=32, 2 x d, 1,250 steps: 58.4 s alone on 2 threads, 92.5 s on 1 thread beside another
    # job; the same weights either way). On a GPU the trainer's CPU side is one thread's work.
    threads: 1
    resources:
        mem_mb=8000,
        runtime=240,
        gpu=GPUS,
    params:
        run_dir=lambda wc, output: str(Path(output.summary).parent),
        hparams=set_options,
        guide=lambda wc, input: f"--guide {input.guide}" if "guide" in input.keys() else "",
        t={"checkpoint_every": 0, "decay": "linear", "decay_start": 0.8, "grad_clip": 1.0, **config["train"]},
        lr=lambda wc: learning_rate(config, wc.kind),
        val=lambda wc: (
            "" if config["train"].get("val_tokens") is None else f"--val-tokens {config['train']['val_tokens']}"
        ),
        labels=label_options,
        device=DEVICE,
    shell:
        "OMP_NUM_THREADS={threads} python -m repro.cli train --cache {input.cache} --kind {wildcards.kind} "
        "--expansion {wildcards.expansion} {params.hparams} {params.guide} --steps {params.t[steps]} "
        "--batch-size {params.t[batch_size]} --lr {params.lr} --warmup {params.t[warmup]} --decay {params.t[decay]} "
        "--decay-start {params.t[decay_start]} --grad-clip {params.t[grad_clip]} {params.val} "
        "--checkpoint-every {params.t[checkpoint_every]} --seed {wildcards.seed} {params.labels} "
        "--out {params.run_dir} --device {params.device} --resume --quiet > {log} 2>&1"


# The guide step reads the sparsemax run's record and trains nothing (a ReLU lambda would come from trained ReLU
# runs, `repro guide --relu-probe`; the workflow compares ReLU through the matched-L0 table instead).
rule guide:
    input:
        summary=f"{RUNS}/{{role}}/{GUIDE_SOURCE}/default/x{{expansion}}/s{{seed}}/train.json",
    output:
        guide=f"{RUNS}/{{role}}/{GUIDE_SOURCE}/default/x{{expansion}}/s{{seed}}/guide.json",
    log:
        f"{RUNS}/logs/guide/{{role}}-x{{expansion}}-s{{seed}}.log",
    benchmark:
        f"{RUNS}/benchmarks/guide/{{role}}-x{{expansion}}-s{{seed}}.tsv"
    conda:
        ENV
    threads: 1
    resources:
        mem_mb=1000,
        runtime=5,
    params:
        run_dir=lambda wc, input: str(Path(input.summary).parent),
    shell:
        "python -m repro.cli guide --from {params.run_dir} --quiet --out {output.guide} > {log} 2>&1"


# An SAE trained elsewhere (config key `external`: a SAELens folder) becomes the run <role>/external/<name>, to be
# evaluated on the role's backbone, dataset and token filter at the SAE's hook (`repro import`).
rule import_sae:
    input:
        unpack(external_inputs),
    output:
        summary=f"{RUNS}/{{role}}/{EXTERNAL}/{{name}}/train.json",
    log:
        f"{RUNS}/logs/import/{{role}}-{{name}}.log",
    conda:
        ENV
    threads: 1
    resources:
        mem_mb=4000,
        runtime=10,
    params:
        folder=lambda wc, input: str(Path(input.cfg).parent),
        run_dir=lambda wc, output: str(Path(output.summary).parent),
        options=import_options,
    shell:
        "OMP_NUM_THREADS={threads} python -m repro.cli import {params.folder} --cache {input.cache} "
        "--out {params.run_dir} {params.options} > {log} 2>&1"
