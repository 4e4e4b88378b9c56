"""Handlers of the subcommands that make caches and runs: demo, kinds, extract, features, train, guide, export,
import and cache verify."""

from __future__ import annotations

import argparse
import dataclasses
import json
import signal
import sys
from pathlib import Path

from repro.cli.arguments import _cache_path, _parse_hparams, _parse_labels, resolve_hook


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
