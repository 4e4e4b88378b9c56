# Activation caches of each backbone's training split (content addressed under cache_root; the pointer file
# names the folder). Evaluation splits are extracted by `repro evaluate` itself, under a per-spec lock.


rule extract:
    output:
        pointer=f"{CACHE}/pointers/{config['name']}/{{role}}.json",
    log:
        f"{RUNS}/logs/extract-{{role}}.log",
    benchmark:
        f"{RUNS}/benchmarks/extract-{{role}}.tsv"
    conda:
        ENV
    threads: 2
    resources:
        mem_mb=4000,
        runtime=60,
        gpu=GPUS,
    params:
        b=lambda wc: backbone(wc.role),
        limit=lambda wc: limit_option(backbone(wc.role)["train_limit"]),
        data_root=lambda wc: data_root_option(wc.role),
        token_filter=lambda wc: token_filter_option(wc.role),
        image_size=lambda wc: image_size_option(wc.role),
        cache=lambda wc, output: str(Path(output.pointer).parents[2]),
        device=DEVICE,
    shell:
        "OMP_NUM_THREADS={threads} python -m repro.cli extract --backbone {params.b[name]} --layer {params.b[hook]} "
        "--dataset {params.b[dataset]} --split train {params.limit} --seed {params.b[seed]} --dtype {params.b[dtype]} "
        "--out {params.cache} {params.data_root} {params.token_filter} {params.image_size} --pointer {output.pointer} --device {params.device} --quiet > {log} 2>&1"
