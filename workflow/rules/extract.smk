# Activation caches of each backbone's training split and evaluation (test) split, and the pooled head features
# of the training split for top-n (content addressed under cache_root; each pointer file names its folder). These
# are the DAG's data nodes: training and evaluation jobs read them and extract nothing themselves.


rule extract:
    output:
        pointer=pointer("{role}", "{split}"),
    log:
        f"{RUNS}/logs/extract-{{role}}-{{split}}.log",
    benchmark:
        f"{RUNS}/benchmarks/extract-{{role}}-{{split}}.tsv"
    conda:
        ENV
    threads: 2
    resources:
        mem_mb=4000,
        runtime=60,
        gpu=GPUS,
    params:
        b=lambda wc: backbone(wc.role),
        limit=lambda wc: split_limit_option(wc.role, wc.split),
        data_root=lambda wc: data_root_option(wc.role),
        token_filter=lambda wc: token_filter_option(wc.role),
        image_size=lambda wc: image_size_option(wc.role),
        cache=lambda wc, output: str(Path(output.pointer).parents[2]),  # pointers/<config>/<file>
        device=DEVICE,
    shell:
        "OMP_NUM_THREADS={threads} python -m repro.cli extract --backbone {params.b[name]} --layer {params.b[hook]} "
        "--dataset {params.b[dataset]} --split {wildcards.split} {params.limit} --seed {params.b[seed]} "
        "--dtype {params.b[dtype]} --out {params.cache} {params.data_root} {params.token_filter} {params.image_size} "
        "--pointer {output.pointer} --device {params.device} --quiet > {log} 2>&1"


rule head_features:
    input:
        cache=pointer("{role}", "train"),
    output:
        pointer=features_pointer("{role}"),
    log:
        f"{RUNS}/logs/head-features-{{role}}.log",
    benchmark:
        f"{RUNS}/benchmarks/head-features-{{role}}.tsv"
    conda:
        ENV
    threads: 2
    resources:
        mem_mb=4000,
        runtime=60,
        gpu=GPUS,
    params:
        data_root=lambda wc: data_root_option(wc.role),
        batch_size=config["evaluation"].get("batch_size", 32),
        cache=lambda wc, output: str(Path(output.pointer).parents[2]),  # pointers/<config>/<file>
        device=DEVICE,
    shell:
        "OMP_NUM_THREADS={threads} python -m repro.cli features --cache {input.cache} --out {params.cache} "
        "--pointer {output.pointer} --batch-size {params.batch_size} {params.data_root} --device {params.device} "
        "> {log} 2>&1"
