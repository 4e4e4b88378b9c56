"""The ``repro`` command line: subcommands only; each calls one library function."""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import re
import signal
import sys
from pathlib import Path


def _demo(args: argparse.Namespace) -> int:
    from repro.demo import format_table, run_demo
    from repro.sae import KINDS

    unknown = sorted(set(args.kinds or ()) - set(KINDS))
    if unknown:
        print(f"repro demo: unknown kind(s) {', '.join(unknown)}; known: {', '.join(KINDS)}", file=sys.stderr)
        return 2
    records = run_demo(
        args.out, args.runs, steps=args.steps, kinds=tuple(args.kinds or KINDS), seed=args.seed, progress=not args.quiet
    )
    print(format_table(records))
    print(f"\nwrote {args.out}/metrics.json and {args.out}/metrics.csv")
    return 0


def _kinds(args: argparse.Namespace) -> int:
    from repro.sae import registry

    for kind, cls in registry().items():
        fields = [f for f in dataclasses.fields(cls.config_cls) if f.name not in ("d_in", "d_sae")]
        print(f"{kind}: " + ", ".join(f"{f.name}={f.default!r}" for f in fields))
    return 0


def _parse_pairs(pairs: list[str] | None, flag: str) -> dict[str, str]:
    """``key=value`` arguments of the repeatable option ``flag`` as a dict (ValueError naming the option)."""
    out = {}
    for pair in pairs or ():
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise ValueError(f"{flag} expects key=value, got {pair!r}")
        out[key] = value
    return out


def _parse_hparams(pairs: list[str]) -> dict:
    """``key=value`` pairs; values are read as JSON where possible (numbers, null, true), else strings."""
    out = {}
    for key, value in _parse_pairs(pairs, "--set").items():
        try:
            out[key] = json.loads(value)
        except json.JSONDecodeError:
            out[key] = value
    return out


def _parse_labels(pairs: list[str] | None) -> dict[str, str]:
    """``key=value`` labels recorded with a run (config, run id, setting) for aggregation."""
    return _parse_pairs(pairs, "--label")


def resolve_hook(hook_points: tuple[str, ...], layer: str) -> str:
    """A hook point from ``--layer``: a hook name, or a layer number L meaning the one hook named
    ``<letters>.L`` (``layer.L``, ``resid.L``, ``vision.layers.L``), or else the L-th hook point."""
    if layer in hook_points:
        return layer
    if layer.isdigit():
        named = [h for h in hook_points if re.fullmatch(rf"[A-Za-z_.]+\.{layer}", h)]
        if len(named) == 1:
            return named[0]
        if int(layer) < len(hook_points):
            return hook_points[int(layer)]
    raise ValueError(f"unknown hook point {layer!r}; valid: {', '.join(hook_points)} (or a layer number)")


def _extract(args: argparse.Namespace) -> int:
    from repro.backbones import load as load_backbone
    from repro.backbones.token_filter import TokenFilter
    from repro.cache import extract
    from repro.data import load as load_data
    from repro.data import load_at_most

    options = {} if args.image_size is None else {"image_size": args.image_size}
    backbone = load_backbone(args.backbone, device=args.device, **options)
    backbone.token_filter = TokenFilter(max_norm_ratio=args.max_norm_ratio)
    hook = resolve_hook(backbone.hook_points, args.layer)
    root = {"root": args.data_root} if args.data_root else {}
    if args.at_most:
        data = load_at_most(args.dataset, args.split, args.limit, args.seed, **root)
    else:
        data = load_data(args.dataset, split=args.split, limit=args.limit, seed=args.seed, **root)
    path = extract(
        backbone, data, hook, args.out, dtype=args.dtype, batch_size=args.batch_size, progress=not args.quiet
    )
    if args.pointer:
        from repro.files import write_pointer

        write_pointer(args.pointer, "cache", path)
    selection = json.loads((Path(path) / "metadata.json").read_text()).get("token_selection") or {}
    if selection.get("rule"):
        print(
            f"token filter {selection['rule']}: dropped {selection['dropped_tokens']} of "
            f"{selection['counted_tokens']} tokens ({100 * selection['dropped_share']:.3f} %), "
            f"{100 * selection['dropped_energy_share']:.2f} % "
            "of sum ||x||^2",
            file=sys.stderr,
        )
    print(path)
    return 0


def _cache_path(value: str) -> str:
    """A cache folder, or a pointer file written by ``repro extract --pointer``."""
    from repro.cache import CacheError
    from repro.files import pointed_folder

    return str(pointed_folder(value, "cache", CacheError))


def _guided(kind: str, guide_file: str) -> dict:
    """The hyperparameter a guidance file (``repro guide``) sets for ``kind``."""
    from repro.kinds import guided_kinds

    guide = json.loads(Path(guide_file).read_text())
    if kind in guided_kinds():
        return {"k": guide[kind]["k"]}
    if kind == "relu" and "relu" in guide:
        return {"l1_coefficient": guide["relu"]["l1_coefficient"]}
    raise ValueError(f"guidance file {guide_file} has nothing for kind {kind!r}")


def _train(args: argparse.Namespace) -> int:
    from repro.cache import ActivationCache
    from repro.sae import create
    from repro.train import TrainConfig, TrainingInterrupted, train

    cache_path = _cache_path(args.cache)
    cache = ActivationCache.open(cache_path)
    hparams = _parse_hparams(args.set) | (_guided(args.kind, args.guide) if args.guide else {})
    d_sae = args.d_sae if args.d_sae is not None else args.expansion * cache.d_model
    sae = create(args.kind, cache.d_model, d_sae, seed=args.seed, **hparams).to(args.device)
    cfg = TrainConfig(
        steps=args.steps,
        lr=args.lr,
        warmup_steps=args.warmup,
        decay=args.decay,
        decay_start=args.decay_start,
        grad_clip=args.grad_clip,
        seed=args.seed,
        checkpoint_every=args.checkpoint_every,
        progress=not args.quiet,
    )
    val_tokens = args.val_tokens if args.val_tokens is not None else min(16_384, cache.n_tokens // 10)
    val_start = cache.validation_start(val_tokens)
    validation = cache.tokens(val_start) if val_start < cache.n_tokens else None
    data = {
        "cache": str(Path(cache_path).resolve()),
        "spec_hash": cache.metadata["spec_hash"],
        "spec": cache.spec,
        "batch_size": args.batch_size,
        "labels": _parse_labels(args.label),
        "train_tokens": val_start,
        "validation": {"start": val_start, "n_tokens": cache.n_tokens - val_start},
    }
    try:
        result = train(
            sae,
            cache.batches(args.batch_size, seed=args.seed, stop=val_start),
            cfg,
            args.out,
            resume=args.resume,
            data=data,
            validation=validation,
        )
    except TrainingInterrupted as e:
        print(f"repro train: {e}", file=sys.stderr)
        return 128 + signal.SIGTERM  # the exit status of a process ended by SIGTERM
    rec = result.record
    summary = {
        "sae": str(result.sae_dir),
        "steps": result.steps,
        "tokens_seen": rec.get("tokens_seen"),
        "held_out": rec.get("final_validation"),
        "converged": rec.get("converged"),
        "plateau_improvement": rec.get("plateau_improvement"),
        "last_quarter_improvement": rec.get("last_quarter_improvement"),
        "penalty_share": rec.get("penalty_share"),
        "warnings": rec.get("warnings", []),
    }
    print(json.dumps(summary, indent=1))
    return 0


def _eval_settings(args: argparse.Namespace):
    from repro.evaluate import EvalSettings

    kw = {"cache_root": args.cache_root, "device": args.device, "progress": not args.quiet, "data_root": args.data_root}
    for name in ("test_limit", "train_limit", "threshold", "batch_size", "lm_texts", "top_k", "selection", "head"):
        if getattr(args, name, None) is not None:
            kw[name] = getattr(args, name)
    for name in ("test_limit", "train_limit"):
        if kw.get(name) == "all":
            kw[name] = None
        elif name in kw:
            kw[name] = _positive_int(name, kw[name])
    if getattr(args, "ns", None):
        kw["ns"] = tuple(args.ns)
    return EvalSettings(**kw)


def _evaluate(args: argparse.Namespace) -> int:
    from repro.evaluate import evaluate_run

    split_caches = _parse_pairs(args.split_cache, "--split-cache")
    written = evaluate_run(
        args.run, args.eval, _eval_settings(args), args.out, split_caches or None, args.head_features
    )
    for name, path in written.items():
        record = json.loads(Path(path).read_text())
        print(f"{name}: {path} ({record['seconds']:.1f} s)")
    if args.index:
        from repro.files import atomic_write

        text = json.dumps({name: str(path) for name, path in written.items()}, indent=1)
        atomic_write(Path(args.index), lambda p: Path(p).write_text(text))
    return 0


def _guide(args: argparse.Namespace) -> int:
    from repro.files import atomic_write
    from repro.guide import guide_from_run

    result = guide_from_run(args.source, args.relu_probe)
    text = json.dumps(result, indent=1)
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        atomic_write(Path(args.out), lambda p: Path(p).write_text(text))
    print(text)
    return 0


def _aggregate(args: argparse.Namespace) -> int:
    from repro.report.aggregate import aggregate

    n = aggregate(args.evals, args.out)
    print(f"{args.out}: {n} rows from {len(args.evals)} evaluation file(s)")
    if args.record:
        _write_record(args.record, "aggregate", args.evals, [args.out], rows=n)
    return 0


def _write_record(path: str, step: str, inputs: list[str], outputs: list[str], **extra) -> None:
    """A JSON record of an aggregation step (what it read and wrote, with provenance), for workflows."""
    from repro.files import atomic_write
    from repro.provenance import provenance

    record = {"step": step, "inputs": list(inputs), "outputs": list(outputs), **extra, "provenance": provenance()}
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    atomic_write(Path(path), lambda p: Path(p).write_text(json.dumps(record, indent=1)))


def _positive_int(name: str, value: str) -> int:
    if not value.isdigit() or int(value) < 1:
        raise ValueError(f"--{name.replace('_', '-')} must be a positive integer or 'all', got {value!r}")
    return int(value)


def _audit(args: argparse.Namespace) -> int:
    from repro.audit import audit_from_csv, strict_failures

    rows, markdown = audit_from_csv(args.metrics, args.out, config=args.config)
    print(markdown)
    failures = strict_failures(rows)
    if args.strict and failures:
        print(f"repro audit: {len(failures)} comparable item(s) not reproduced", file=sys.stderr)
        return 1
    return 0


def _report_table(args: argparse.Namespace) -> int:
    from repro.report.tables import render_table

    for path in render_table(args.name, args.metrics, args.out):
        print(path)
    return 0


def _report_figure(args: argparse.Namespace) -> int:
    from repro.report.figures import render

    for path in render(
        args.name, Path(args.metrics) if args.metrics else None, Path(args.data) if args.data else None, Path(args.out)
    ):
        print(path)
    return 0


def _report_figure_data(args: argparse.Namespace) -> int:
    from repro.report.figure_data import collect

    written = [str(path) for path in collect(args.evals, args.out).values()]
    for path in written:
        print(path)
    if args.record:
        _write_record(args.record, "figure_data", args.evals, written)
    return 0


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


def _features(args: argparse.Namespace) -> int:
    from repro.evals.heads import split_head_features

    folder = split_head_features(
        _cache_path(args.cache), args.out, batch_size=args.batch_size, device=args.device, data_root=args.data_root
    )
    if args.pointer:
        from repro.files import write_pointer

        write_pointer(args.pointer, "features", folder)
    print(folder)
    return 0


def _cache_verify(args: argparse.Namespace) -> int:
    from repro import head_features
    from repro.cache import verify

    if head_features.is_features_folder(args.path):
        problems = head_features.verify(args.path)
    else:
        problems = verify(args.path, checksums=not args.quick)
    for p in problems:
        print(f"PROBLEM: {p}")
    print(f"{args.path}: {'intact' if not problems else f'{len(problems)} problem(s)'}")
    return 1 if problems else 0


def _export(args: argparse.Namespace) -> int:
    from repro.interop.saelens import export_run

    out = export_run(args.run, args.out)
    print(f"{args.run} -> {out} (SAELens format: sae_lens.SAE.load_from_disk({str(out)!r}))")
    return 0


def _import(args: argparse.Namespace) -> int:
    from repro import run_record
    from repro.interop.saelens_import import import_run

    out = import_run(
        args.folder,
        args.out,
        _cache_path(args.cache),
        model=args.model,
        hook=args.hook,
        labels=_parse_labels(args.label),
    )
    record = run_record.read(out)
    imported = record["imported"]
    print(
        f"{args.folder} ({imported['architecture']}, {imported['model_name']} {imported['hook_name']}) -> {out} "
        f"({record['kind']}, d_sae {record['sae_config']['d_sae']}, {imported['backbone']} {imported['hook']}); "
        f"evaluate it with: repro evaluate --run {out} --eval reconstruction"
    )
    return 0


def _synthetic(args: argparse.Namespace) -> int:
    import yaml

    from repro.experiments.synthetic import SyntheticConfig, run_synthetic

    try:
        raw = yaml.safe_load(open(args.config))
    except yaml.YAMLError as e:
        raise ValueError(f"{args.config}: not valid YAML ({e})") from None
    if not isinstance(raw, dict):
        raise ValueError(f"{args.config}: the config must be a mapping")
    cfg = SyntheticConfig.from_dict(raw)
    prefix = args.name or Path(args.config).stem
    result = run_synthetic(cfg, args.out, args.figures, progress=not args.quiet, figure_prefix=prefix)
    print((Path(args.out) / "table.md").read_text())
    print(f"{len(result['runs'])} runs in {result['seconds']:.0f} s; wrote {args.out}/ and {args.figures}/")
    return 0


def build_parser() -> argparse.ArgumentParser:
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


def _user_errors() -> tuple[type[BaseException], ...]:
    """Exceptions that mean bad input or a missing asset: reported in one line, no traceback."""
    errors: list[type[BaseException]] = [ValueError, FileExistsError, FileNotFoundError]
    for module, name in (("repro.data", "DatasetUnavailable"), ("repro.backbones", "BackboneUnavailable")):
        if module in sys.modules:
            errors.append(getattr(sys.modules[module], name))
    return tuple(errors)


def _hide_library_progress_bars() -> None:
    """``--quiet`` also hides the Hugging Face libraries' bars (e.g. transformers' "Loading weights")."""
    os.environ["HF_HUB_DISABLE_PROGRESS_BARS"] = "1"  # read when huggingface_hub / transformers are imported
    if "transformers" in sys.modules:
        sys.modules["transformers"].utils.logging.disable_progress_bar()


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if getattr(args, "quiet", False):
        _hide_library_progress_bars()
    try:
        return args.func(args)
    except Exception as e:
        if not isinstance(e, _user_errors()):
            raise
        print(f"repro {args.command}: error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
