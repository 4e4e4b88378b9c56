"""The ``repro`` command line: subcommands only; each calls one library function."""

from __future__ import annotations

import argparse
import dataclasses
import sys


def _demo(args: argparse.Namespace) -> int:
    from repro.demo import format_table, run_demo
    from repro.sae import KINDS

    unknown = sorted(set(args.kinds or ()) - set(KINDS))
    if unknown:
        print(f"repro demo: unknown kind(s) {', '.join(unknown)}; known: {', '.join(KINDS)}", file=sys.stderr)
        return 2
    records = run_demo(args.out, args.runs, steps=args.steps, kinds=tuple(args.kinds or KINDS), seed=args.seed,
                       progress=not args.quiet)
    print(format_table(records))
    print(f"\nwrote {args.out}/metrics.json and {args.out}/metrics.csv")
    return 0


def _kinds(args: argparse.Namespace) -> int:
    from repro.sae import registry

    for kind, cls in registry().items():
        fields = [f for f in dataclasses.fields(cls.config_cls) if f.name not in ("d_in", "d_sae")]
        print(f"{kind}: " + ", ".join(f"{f.name}={f.default!r}" for f in fields))
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="repro",
                                     description="sae-repro: train, evaluate and audit sparse autoencoders")
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
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except (ValueError, FileExistsError) as e:
        print(f"repro {args.command}: error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
