"""The built-in demo: train every SAE kind on planted-feature activations and compare them.

64 unit features in 32 dimensions (superposition), about 3 active per token, magnitudes U(0.5, 1.5),
small noise; every kind gets 512 latents, the same seeded stream and the same Adam schedule, then
is evaluated with :class:`repro.metrics.ReconstructionMetrics` on held-out tokens. Writes
``metrics.json`` (records with provenance) and ``metrics.csv`` (one row per kind) to ``out_dir``.
"""

from __future__ import annotations

import csv
import json
import time
from pathlib import Path

import torch

from repro.files import atomic_write
from repro.metrics import ReconstructionMetrics
from repro.provenance import provenance
from repro.sae import KINDS, create
from repro.synthetic import PlantedFeatures
from repro.train import TrainConfig, train

PLANTED = PlantedFeatures(d_in=32, n_features=64, mean_active=3.0, noise=0.01, seed=0)
D_SAE = 512
HPARAMS = {"topk": {"k": 4}, "batchtopk": {"k": 4}}
COLUMNS = ("kind", "ev", "mse", "nmse", "cosine", "l0", "l0_p5", "l0_p95", "dead_fraction", "train_seconds")


def run_demo(
    out_dir: str | Path,
    runs_dir: str | Path,
    steps: int = 400,
    kinds: tuple[str, ...] = KINDS,
    seed: int = 0,
    eval_tokens: int = 8192,
    progress: bool = True,
) -> list[dict]:
    """Train and evaluate each kind; returns one record per kind and writes the result files."""
    out_dir, runs_dir = Path(out_dir), Path(runs_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    train_cfg = TrainConfig(steps=steps, lr=1e-2, warmup_steps=20, seed=seed, checkpoint_every=0, progress=progress)
    x_eval = next(PLANTED.batches(eval_tokens, seed=seed + 1_000))
    records = []
    for kind in kinds:
        sae = create(kind, PLANTED.d_in, D_SAE, seed=seed, dead_window=2000, **HPARAMS.get(kind, {}))
        run_dir = runs_dir / kind
        resume = (run_dir / "checkpoint").exists()
        result = train(sae, PLANTED.batches(256, seed=seed), train_cfg, run_dir, resume=resume)
        metrics = ReconstructionMetrics(D_SAE)
        sae.eval()
        with torch.no_grad():
            for chunk in x_eval.split(2048):
                x_hat, acts = sae(chunk)
                metrics.update(chunk, x_hat, acts)
        m = metrics.compute()
        records.append({"kind": kind, "hparams": HPARAMS.get(kind, {}), "metrics": m, "train_seconds": result.seconds})
    summary = {
        "experiment": "planted-features demo",
        "data": PLANTED.__dict__,
        "d_sae": D_SAE,
        "train_config": train_cfg.__dict__,
        "records": records,
        "provenance": provenance(),
        "date": time.strftime("%Y-%m-%d"),
    }
    atomic_write(out_dir / "metrics.json", lambda p: Path(p).write_text(json.dumps(summary, indent=1, default=str)))
    atomic_write(out_dir / "metrics.csv", lambda p: _write_csv(p, records))
    return records


def table_rows(records: list[dict]) -> list[dict]:
    """Flat rows (COLUMNS) of the demo records."""
    rows = []
    for r in records:
        m = r["metrics"]
        rows.append(
            {
                "kind": r["kind"],
                "ev": m["ev"],
                "mse": m["mse"],
                "nmse": m["nmse"],
                "cosine": m["cosine"],
                "l0": m["l0"],
                "l0_p5": m["l0_quantiles"]["p5"],
                "l0_p95": m["l0_quantiles"]["p95"],
                "dead_fraction": m["dead_fraction"],
                "train_seconds": r["train_seconds"],
            }
        )
    return rows


def _write_csv(path: str, records: list[dict]) -> None:
    with open(path, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=COLUMNS)
        writer.writeheader()
        for row in table_rows(records):
            writer.writerow({k: (f"{v:.6g}" if isinstance(v, float) else v) for k, v in row.items()})


def format_table(records: list[dict]) -> str:
    """A Markdown table of the demo results."""
    lines = ["| " + " | ".join(COLUMNS) + " |", "|" + "---|" * len(COLUMNS)]
    for row in table_rows(records):
        lines.append("| " + " | ".join(f"{v:.3f}" if isinstance(v, float) else str(v) for v in row.values()) + " |")
    return "\n".join(lines)
