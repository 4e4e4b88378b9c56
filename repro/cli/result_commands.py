"""Handlers of the subcommands that evaluate runs and make results of the evaluations: evaluate, aggregate,
audit, report and synthetic."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from repro.cli.arguments import _parse_pairs, _positive_int


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
