"""Learning-rate sweep per SAE kind on one activation cache: how config/default.yaml's per-kind rates
(``train.lr_by_kind``) were chosen.

Every (kind, lr) pair trains with the project's own trainer (same batches, same seed, the default
recipe: warm-up, linear decay over the last 20 %, gradient clip 1.0) on the cache's training tokens and
is scored on the cache's held-out tail (the trainer's validation split, never an evaluation split):
held-out NMSE (uncentred, ratio of sums), explained variance and L0. One line per run and a Markdown
table at the end, the best rate per kind marked.

    python benchmarks/lr_sweep.py --cache POINTER_OR_DIR --expansion 2 --steps 300 \\
        --kinds topk relu relu:l1_coefficient=15 sparsemax_attention --lrs 1e-3 3e-3 1e-2 --set relu.l1_coefficient=5

A kind may carry its own settings (``relu:l1_coefficient=15``), overriding ``--set``; the table then also
shows where a penalty puts the held-out L0 (a cheap first look at a sweep's bracket).
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--cache", required=True, help="a cache folder or a pointer JSON naming one")
    p.add_argument("--expansion", type=int, default=2)
    p.add_argument("--steps", type=int, default=300)
    p.add_argument("--batch-size", type=int, default=4096)
    p.add_argument("--warmup", type=int, default=50)
    p.add_argument("--kinds", nargs="+", required=True)
    p.add_argument("--lrs", nargs="+", type=float, required=True)
    p.add_argument("--set", action="append", default=[], help="kind.key=value hyperparameter (repeatable)")
    p.add_argument("--val-tokens", type=int, default=16_384)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--json", help="also write the rows here")
    args = p.parse_args()

    from repro.cache import ActivationCache
    from repro.sae import create
    from repro.train import TrainConfig, train

    path = Path(args.cache)
    if path.is_file():
        path = Path(json.loads(path.read_text())["cache"])
    cache = ActivationCache.open(path)
    hparams: dict[str, dict] = {}
    for item in args.set:
        key, _, value = item.partition("=")
        kind, _, name = key.partition(".")
        hparams.setdefault(kind, {})[name] = json.loads(value)
    val_start = cache.validation_start(args.val_tokens)
    validation = cache.tokens(val_start)
    print(
        f"cache {path.name[:12]}: d={cache.d_model}, {val_start} training tokens, "
        f"{cache.n_tokens - val_start} held out; {args.steps} steps x {args.batch_size}"
    )
    rows = []
    for label in args.kinds:
        kind, _, extra = label.partition(":")
        own = {k: json.loads(v) for k, _, v in (item.partition("=") for item in extra.split(",") if item)}
        for lr in args.lrs:
            options = ({"input_norm": "scalar"} if kind in LINEAR else {}) | hparams.get(kind, {}) | own
            sae = create(kind, cache.d_model, args.expansion * cache.d_model, seed=args.seed, **options)
            cfg = TrainConfig(steps=args.steps, lr=lr, warmup_steps=args.warmup, seed=args.seed, progress=False)
            start = time.perf_counter()
            with tempfile.TemporaryDirectory() as tmp:
                rec = train(
                    sae, cache.batches(args.batch_size, seed=args.seed, stop=val_start), cfg, tmp, validation=validation
                ).record
            final = rec["final_validation"]
            row = {
                "kind": label,
                "lr": lr,
                "nmse": final["nmse"],
                "ev": final.get("ev"),
                "l0": final["l0"],
                "converged": rec.get("converged"),
                "seconds": time.perf_counter() - start,
            }
            rows.append(row)
            print(json.dumps(row), flush=True)
    print("\n| kind | lr | held-out NMSE | EV | L0 | converged | s |\n|---|---|---|---|---|---|---|")
    for kind in args.kinds:
        mine = [r for r in rows if r["kind"] == kind]
        best = min(mine, key=lambda r: r["nmse"])
        for r in mine:
            mark = " **best**" if r is best else ""
            ev = "–" if r["ev"] is None else f"{r['ev']:.3f}"
            print(
                f"| {kind} | {r['lr']:g}{mark} | {r['nmse']:.4f} | {ev} | {r['l0']:.1f} | {r['converged']} | "
                f"{r['seconds']:.0f} |"
            )
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=1))


LINEAR = ("relu", "topk", "batchtopk", "jumprelu", "gated")

if __name__ == "__main__":
    main()
