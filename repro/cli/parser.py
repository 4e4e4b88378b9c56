"""The argument parser of ``repro``: every subcommand, its options and its handler."""

from __future__ import annotations

import argparse

from repro.cli.result_commands import (
    _aggregate,
    _audit,
    _evaluate,
    _report_figure,
    _report_figure_data,
    _report_table,
    _synthetic,
)
from repro.cli.run_commands import (
    _cache_verify,
    _demo,
    _export,
    _extract,
    _features,
    _guide,
    _import,
    _kinds,
    _train,
)


def _add_eval_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--test-limit", help="at most this many test-split examples, or 'all' (default 1000)")
    p.add_argument(
        "--train-limit",
        help="at most this many training-split examples when the run's cache is "
        "not a training split, or 'all' (default 4000)",
    )
    p.add_argument("--cache-root", default="cache", help="where the evaluation splits' activations are cached")
    p.add_argument("--data-root", help="folder of pre-cached paper-scale datasets (not needed offline)")
    p.add_argument("--device", default="cpu")
    p.add_argument("--quiet", action="store_true")


def build_parser() -> argparse.ArgumentParser:
    """The parser of ``repro``: each subcommand sets ``func``, its handler."""
    from repro.evals import registry

    parser = argparse.ArgumentParser(
        prog="repro", description="sae-repro: train, evaluate and audit sparse autoencoders"
    )
    sub = parser.add_subparsers(dest="command", required=True)
    demo = sub.add_parser("demo", help="train every SAE kind on planted features and print the comparison")
    demo.add_argument("--out", default="results/demo", help="folder for metrics.json and metrics.csv")
    demo.add_argument("--runs", default="runs/demo", help="folder for checkpoints and logs (resumable)")
    demo.add_argument("--steps", type=int, default=400)
    demo.add_argument("--seed", type=int, default=0)
    demo.add_argument("--kinds", nargs="*", help="subset of kinds (default: all)")
    demo.add_argument("--quiet", action="store_true", help="no progress bars")
    demo.set_defaults(func=_demo)
    kinds = sub.add_parser("kinds", help="list the SAE kinds and their hyperparameters")
    kinds.set_defaults(func=_kinds)

    ext = sub.add_parser("extract", help="extract hook-point activations of a backbone on a dataset into a cache")
    ext.add_argument("--backbone", required=True)
    ext.add_argument(
        "--layer",
        required=True,
        help="hook point name, or a layer number (layer.L, resid.L, vision.layers.L; "
        "for backbones without numbered layers, an index into the hook points)",
    )
    ext.add_argument("--dataset", required=True)
    ext.add_argument("--split", choices=("train", "test"), default="train")
    ext.add_argument("--limit", type=int, default=None, help="number of examples (class-balanced subset)")
    ext.add_argument(
        "--at-most",
        action="store_true",
        help="--limit is an upper bound: the whole split when it has fewer examples (as repro evaluate reads "
        "its evaluation splits; the workflow extracts them so)",
    )
    ext.add_argument("--seed", type=int, default=0, help="seed of the dataset split and subset")
    ext.add_argument("--out", default="cache", help="cache root; the cache folder is named by the spec hash")
    ext.add_argument("--batch-size", type=int, default=32)
    ext.add_argument("--dtype", choices=("float32", "float16", "bfloat16"), default="float32")
    ext.add_argument("--data-root", help="folder of pre-cached paper-scale datasets (not needed offline)")
    ext.add_argument("--pointer", help="also write a JSON naming the cache folder here (for workflows)")
    ext.add_argument(
        "--max-norm-ratio",
        type=float,
        help="drop tokens whose norm exceeds this multiple of the batch's median token norm "
        "(attention-sink outliers; default: keep all); recorded in the cache's spec",
    )
    ext.add_argument(
        "--image-size",
        type=int,
        help="input resolution of an image backbone (default: the backbone's own; recorded in the cache's spec)",
    )
    ext.add_argument("--device", default="cpu", help="where the backbone runs (cpu, cuda, cuda:1, ...)")
    ext.add_argument("--quiet", action="store_true")
    ext.set_defaults(func=_extract)

    feat = sub.add_parser(
        "features", help="the backbone's pooled final features of the split an activation cache holds (top-n head)"
    )
    feat.add_argument("--cache", required=True, help="the split's activation cache (folder or pointer)")
    feat.add_argument("--out", default="cache", help="cache root; the features go to <out>/features/<spec hash>")
    feat.add_argument("--pointer", help="also write a JSON naming the features folder here (for workflows)")
    feat.add_argument("--batch-size", type=int, default=32, help="backbone batch size of a full forward pass")
    feat.add_argument("--data-root", help="folder of pre-cached paper-scale datasets (not needed offline)")
    feat.add_argument("--device", default="cpu")
    feat.set_defaults(func=_features)

    tr = sub.add_parser("train", help="train an SAE on an activation cache")
    tr.add_argument(
        "--cache", required=True, help="a cache folder (as printed by repro extract) or the pointer file of --pointer"
    )
    tr.add_argument("--kind", required=True)
    width = tr.add_mutually_exclusive_group(required=True)
    width.add_argument("--d-sae", type=int, help="number of latents")
    width.add_argument("--expansion", type=int, help="number of latents as a multiple of the cache's width")
    tr.add_argument("--guide", help="a guidance JSON (repro guide): sets k (topk, batchtopk) or l1_coefficient (relu)")
    tr.add_argument("--set", action="append", metavar="KEY=VALUE", help="an SAE hyperparameter (repeatable)")
    tr.add_argument("--steps", type=int, default=1000)
    tr.add_argument("--batch-size", type=int, default=4096)
    tr.add_argument("--lr", type=float, default=4e-4)
    tr.add_argument("--warmup", type=int, default=500)
    tr.add_argument(
        "--decay",
        choices=("none", "linear", "cosine"),
        default="linear",
        help="lr decay to zero from --decay-start (default: linear over the last 20 %%)",
    )
    tr.add_argument("--decay-start", type=float, default=0.8, help="fraction of the steps where the decay starts")
    tr.add_argument("--grad-clip", type=float, default=1.0, help="clip the gradient norm at this value (0 = off)")
    tr.add_argument(
        "--val-tokens",
        type=int,
        help="tokens at the end of the cache held out for the convergence record (whole examples; "
        "default min(16384, 10 %% of the cache); 0 = none)",
    )
    tr.add_argument("--seed", type=int, default=0)
    tr.add_argument("--checkpoint-every", type=int, default=0)
    tr.add_argument("--out", required=True, help="run folder (checkpoints, log.csv, sae/)")
    tr.add_argument("--resume", action="store_true")
    tr.add_argument("--device", default="cpu", help="where the SAE trains (cpu, cuda, ...); batches are moved there")
    tr.add_argument(
        "--label",
        action="append",
        metavar="KEY=VALUE",
        help="a label recorded in train.json for aggregation (config, run, setting; repeatable)",
    )
    tr.add_argument("--quiet", action="store_true")
    tr.set_defaults(func=_train)

    ev = sub.add_parser("evaluate", help="run downstream evaluations of a trained run, one JSON each")
    ev.add_argument("--run", required=True, help="a run folder written by repro train")
    ev.add_argument(
        "--eval",
        action="append",
        required=True,
        help=f"{', '.join(registry.names())} or all (repeatable; repro/evals/registry.py)",
    )
    ev.add_argument("--out", help="folder for <eval>.json (default RUN/eval)")
    ev.add_argument("--index", help="also write a JSON {eval: file} of what was written (for workflows)")
    ev.add_argument(
        "--selection",
        choices=("nonzero", "sum", "threshold"),
        help="top-n selection statistic (default nonzero: the count of nonzero activations per class)",
    )
    ev.add_argument("--threshold", type=float, help="counting threshold of --selection threshold (official 0.2)")
    ev.add_argument(
        "--head",
        choices=("auto", "cosine", "linear", "zero-shot"),
        help="top-n head (default auto: CLIP's zero-shot head on CLIP, else cosine class means)",
    )
    ev.add_argument("--ns", type=int, nargs="+", help="top-n sizes (default 1 5 10 50)")
    ev.add_argument("--batch-size", type=int)
    ev.add_argument("--lm-texts", type=int, help="test texts for lm_loss (default 64)")
    ev.add_argument("--top-k", type=int, help="top examples kept per latent (default 50)")
    ev.add_argument(
        "--split-cache",
        action="append",
        default=[],
        metavar="SPLIT=CACHE",
        help="the activation cache (folder or pointer) of a split, extracted beforehand (repeatable); when given, "
        "every split read must be given and nothing is extracted (the workflow's extract rules)",
    )
    ev.add_argument(
        "--head-features",
        metavar="FEATURES",
        help="the training split's pooled head features (folder or pointer of repro features) for top-n",
    )
    _add_eval_options(ev)
    ev.set_defaults(func=_evaluate)

    gd = sub.add_parser(
        "guide", help="k for topk/batchtopk from a sparsemax run's L0 (and ReLU lambda from trained ReLU runs)"
    )
    gd.add_argument("--from", dest="source", required=True, help="the sparsemax run folder")
    gd.add_argument("--out", help="write the guidance JSON here too")
    gd.add_argument(
        "--relu-probe",
        action="append",
        default=[],
        metavar="RUN",
        help="a ReLU run trained on the same cache (repeatable): lambda is interpolated from their L0s; "
        "guidance never trains",
    )
    gd.add_argument("--quiet", action="store_true")
    gd.set_defaults(func=_guide)

    agg = sub.add_parser("aggregate", help="evaluation JSONs -> one tidy CSV (run, eval, metric, value)")
    agg.add_argument("evals", nargs="+", help="evaluation JSON files written by repro evaluate")
    agg.add_argument("--out", required=True)
    agg.add_argument("--record", help="also write a JSON record of the inputs and outputs here (for workflows)")
    agg.set_defaults(func=_aggregate)

    aud = sub.add_parser("audit", help="compare the aggregated results with the paper's numbers and claims")
    aud.add_argument("--metrics", default="results/metrics.csv", help="the tidy CSV of repro aggregate")
    aud.add_argument("--out", default="results/audit.md")
    aud.add_argument("--config", help="only the rows of this config name (default: all rows)")
    aud.add_argument("--strict", action="store_true", help="exit 1 when a checkable item is not reproduced")
    aud.set_defaults(func=_audit)

    rep = sub.add_parser("report", help="tables, figure data and figures from aggregated results")
    rep_sub = rep.add_subparsers(dest="report_command", required=True)
    tab = rep_sub.add_parser("table", help="one table as Markdown and LaTeX")
    tab.add_argument("name", help="table_a, table_b, topn_methods, guidance, matched_l0 or probing")
    tab.add_argument("--metrics", default="results/metrics.csv")
    tab.add_argument("--out", required=True, help="output path without suffix (.md and .tex are written)")
    tab.set_defaults(func=_report_table)
    fig = rep_sub.add_parser("figure", help="one figure as PDF and PNG")
    fig.add_argument("name")
    fig.add_argument("--metrics", default="results/metrics.csv")
    fig.add_argument("--data", default="results/figure_data", help="folder of the figure-data JSON files")
    fig.add_argument("--out", required=True, help="output path without suffix (.pdf and .png are written)")
    fig.set_defaults(func=_report_figure)
    fd = rep_sub.add_parser("figure-data", help="gather what the figures need from the runs' evaluations")
    fd.add_argument("evals", nargs="+", help="evaluation JSONs or index files")
    fd.add_argument("--out", required=True, help="folder for latents.json, training_curves.json, ...")
    fd.add_argument("--record", help="also write a JSON record of the inputs and outputs here (for workflows)")
    fd.set_defaults(func=_report_figure_data)

    syn = sub.add_parser("synthetic", help="the ground-truth benchmark on planted features")
    syn.add_argument("--config", default="config/synthetic.yaml")
    syn.add_argument("--out", default="results/synthetic")
    syn.add_argument("--figures", default="figures")
    syn.add_argument(
        "--name",
        help="figure file prefix (default: the config's file name without .yaml, e.g. "
        "synthetic_hard -> figures/synthetic_hard_mcc.pdf)",
    )
    syn.add_argument("--quiet", action="store_true")
    syn.set_defaults(func=_synthetic)

    exp = sub.add_parser("export", help="write a trained run's SAE in another library's on-disk format")
    exp.add_argument("run", help="a run folder (with sae/ and train.json)")
    exp.add_argument("--format", choices=["saelens"], default="saelens")
    exp.add_argument("--out", required=True, help="the folder to write (cfg.json, sae_weights.safetensors)")
    exp.set_defaults(func=_export)

    imp = sub.add_parser("import", help="make a run of an SAE saved in another library's format, for repro evaluate")
    imp.add_argument("folder", help="an SAELens SAE folder (cfg.json, sae_weights.safetensors)")
    imp.add_argument("--format", choices=["saelens"], default="saelens")
    imp.add_argument(
        "--cache",
        required=True,
        help="an activation cache (or pointer) of ours: the backbone, dataset and token filter to "
        "evaluate on; the hook is the SAE's",
    )
    imp.add_argument("--out", required=True, help="the run folder to write (sae/, train.json)")
    imp.add_argument("--model", help="our backbone's name, when the SAE's metadata.model_name is not one we know")
    imp.add_argument("--hook", help="our hook name, instead of the one mapped from the SAE's metadata.hook_name")
    imp.add_argument(
        "--label",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="a label recorded in train.json for aggregation (repeatable)",
    )
    imp.set_defaults(func=_import)

    cache = sub.add_parser("cache", help="activation cache tools")
    cache_sub = cache.add_subparsers(dest="cache_command", required=True)
    ver = cache_sub.add_parser(
        "verify", help="check a cache folder (activations or pooled features): spec hash, sizes and checksums"
    )
    ver.add_argument("path")
    ver.add_argument("--quick", action="store_true", help="sizes and spec hash only, no checksums")
    ver.set_defaults(func=_cache_verify)
    return parser
