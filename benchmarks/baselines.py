"""Do the baselines respond as their methods should? Held-out measurements on one real activation cache.

Trains, with the harness's defaults (normalised inputs, b_dec from the data, warm-up + linear decay, clipping,
AuxK window scaled to the run), on the cache minus a held-out tail of whole examples (``--heldout`` tokens):

- ReLU, JumpReLU and Gated at three coefficients spanning two decades: held-out L0 and NMSE;
- BatchTopK at three k: held-out L0 (calibrated threshold and the training-time moving average) against k;
- TopK k = 32 with and without AuxK, with the default set-up and with the naive one (raw inputs, b_dec = 0,
  no lr decay: the harness before December 2026, and SAELens's defaults): held-out dead fraction.

Prints a Markdown table (and writes the records as JSON with ``--out``). Same batches for every run
(``--seed``), ``--steps`` x ``--batch-size`` tokens each (default 500 x 4096 = 2.05M).

    python benchmarks/baselines.py --cache CACHE_OR_POINTER            # the README's table (about 1 h on 2 cores)
    python benchmarks/baselines.py --cache ... --steps 60 --batch-size 1024 --expansion 2 --only relu   # a look
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import torch

from repro.cache import ActivationCache
from repro.sae import create
from repro.train import TrainConfig, train

SWEEPS = {
    "relu": ("l1_coefficient", (0.5, 5.0, 50.0)),
    "jumprelu": ("l0_coefficient", (0.1, 1.0, 10.0)),
    "gated": ("l1_coefficient", (0.1, 1.0, 10.0)),
    "batchtopk": ("k", (16, 32, 64)),
}
NAIVE = {"input_norm": "none", "b_dec_init": "zeros"}


def runs(only: list[str] | None) -> list[tuple[str, str, dict, dict]]:
    """(group, kind, SAE hyperparameters, training overrides)."""
    out = []
    for kind, (key, values) in SWEEPS.items():
        out += [(kind, kind, {key: v}, {}) for v in values]
    for setup, hp, tr in (("default", {}, {}), ("naive", NAIVE, {"decay": "none", "grad_clip": 0.0})):
        for coefficient in (1 / 32, 0.0):
            out.append((f"topk-{setup}", "topk", {"k": 32, "auxk_coefficient": coefficient, **hp}, tr))
    return [r for r in out if not only or r[1] in only or r[0] in only]


def cache_path(value: str) -> str:
    p = Path(value)
    return json.loads(p.read_text())["cache"] if p.is_file() and p.suffix == ".json" else value


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--cache", required=True, help="an activation cache folder or a pointer JSON")
    p.add_argument("--steps", type=int, default=500)
    p.add_argument("--batch-size", type=int, default=4096)
    p.add_argument("--expansion", type=int, default=4)
    p.add_argument("--lr", type=float, default=4e-4)
    p.add_argument("--warmup", type=int, default=50)
    p.add_argument("--heldout", type=int, default=32768)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--only", nargs="*", help="kinds or groups (relu, jumprelu, gated, batchtopk, topk-default, ...)")
    p.add_argument("--out", help="write every run's record here (JSON)")
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    cache = ActivationCache.open(cache_path(args.cache))
    start = cache.validation_start(args.heldout)
    heldout = cache.tokens(start)
    d = cache.d_model
    print(
        f"cache {cache.path.name[:12]}: {cache.n_tokens} tokens of {d} ({start} for training, "
        f"{len(heldout)} held out); {args.steps} x {args.batch_size} = {args.steps * args.batch_size:,} tokens per "
        f"run, {args.expansion * d} latents",
        file=sys.stderr,
        flush=True,
    )
    records = []
    for group, kind, hp, overrides in runs(args.only):
        began = time.perf_counter()
        sae = create(kind, d, args.expansion * d, seed=args.seed, **hp)
        cfg = TrainConfig(
            **{
                "steps": args.steps,
                "lr": args.lr,
                "warmup_steps": args.warmup,
                "seed": args.seed,
                "progress": False,
                **overrides,
            }
        )
        with tempfile.TemporaryDirectory() as run_dir:
            result = train(
                sae, cache.batches(args.batch_size, seed=args.seed, stop=start), cfg, run_dir, validation=heldout
            )
        rec = result.record
        entry = {
            "group": group,
            "kind": kind,
            "hparams": hp,
            "train": overrides,
            **rec["final_validation"],
            "converged": rec["converged"],
            "last_quarter_improvement": rec["last_quarter_improvement"],
            "penalty_share": rec["penalty_share"],
            "thresholds": rec["thresholds"],
            "finish": rec["finish"],
            "warnings": rec["warnings"],
            "seconds": time.perf_counter() - began,
        }
        if kind == "batchtopk":  # held-out L0 with the moving-average threshold, for comparison
            with torch.no_grad():
                sae.threshold.fill_(rec["finish"]["threshold_ema"])
                entry["l0_ema_threshold"] = float((sae.eval().encode(heldout) != 0).sum(-1).double().mean())
        records.append(entry)
        print(
            f"  {group} {hp}: NMSE {entry['nmse']:.4f}, L0 {entry['l0']:.1f}, dead {entry['dead_fraction']:.4f}, "
            f"{entry['seconds']:.0f} s",
            file=sys.stderr,
            flush=True,
        )
    print(
        "| group | setting | held-out NMSE | EV | L0 | dead % | converged (last-quarter gain) | penalty share | note |"
    )
    print("|---|---|---|---|---|---|---|---|---|")
    for e in records:
        setting = ", ".join(f"{k}={v:g}" if isinstance(v, float) else f"{k}={v}" for k, v in e["hparams"].items())
        note = ""
        if e["kind"] == "batchtopk":
            note = f"L0 with the moving-average threshold: {e['l0_ema_threshold']:.1f}"
        elif e["kind"] == "jumprelu" and e["thresholds"]:
            note = f"mean threshold {e['thresholds']['mean_start']:.3f} -> {e['thresholds']['mean_end']:.3f}"
        share = "-" if e["penalty_share"] is None else f"{e['penalty_share']:.3f}"
        print(
            f"| {e['group']} | {setting} | {e['nmse']:.4f} | {e['ev']:.4f} | {e['l0']:.1f} | "
            f"{100 * e['dead_fraction']:.2f} | {e['converged']} ({100 * e['last_quarter_improvement']:.1f} %) | "
            f"{share} | {note} |"
        )
    if args.out:
        Path(args.out).write_text(json.dumps(records, indent=1))


if __name__ == "__main__":
    main()
