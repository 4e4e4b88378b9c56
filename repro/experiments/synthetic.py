"""The ground-truth benchmark: every SAE kind trained on the same planted-feature stream, several seeds,
scored against the known dictionary and the known number of active features per sample.

The question (the paper's adaptive-sparsity claim): does an SAE's per-sample L0 follow the true number
of active features? Does it recover the true dictionary? Outputs: ``results.json`` (every run, with
the config and provenance), ``summary.csv`` and ``table.md`` (mean and std over seeds per method) in
``out_dir``, and two figures in ``figures_dir``: true count vs L0 per method, and dictionary recovery
(MCC) per method.

Protocol. Penalties set to ``match_l0`` are searched on a *validation* sample (its own seed), never on
the evaluation sample the table reports; a search whose chosen probe misses the target by more than
:data:`repro.guide.MATCH_RATIO` is flagged (``search_matched`` < 1 in the table, "not matched" beside the
method) and is not an L0-matched baseline. The table carries a chance row: the MCC of a random dictionary
of the same width (seeded unit directions), which any learned dictionary must beat to mean anything, and
the intercept and slope of L0 against the true count. ``step_sweep`` (a list of step counts) retrains
every method at each count on the first seed and records EV, L0 and MCC per count, so a reader can see whether
each kind has plateaued (``plateau`` in results.json: the change over the last doubling).
"""

from __future__ import annotations

import csv
import json
import math
import statistics
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from repro.evals.ground_truth import (
    decoder_directions,
    latent_precision_recall,
    match_dictionary,
    simple_vs_complex,
    sparsity_tracking,
)
from repro.files import atomic_write
from repro.guide import bisect_penalty
from repro.metrics import ReconstructionMetrics
from repro.provenance import provenance, to_plain
from repro.sae import KINDS, create
from repro.synthetic import SyntheticSpec
from repro.train import TrainConfig, train

# Symbolic values of ``k`` (TopK family) resolved from the data's mean true count.
K_RULES = {"mean": 1.0, "half": 0.5, "double": 2.0}
MATCH_L0 = "match_l0"


@dataclass(frozen=True)
class Method:
    """One row of the benchmark: a display name, an SAE kind and its hyperparameters. ``k`` may be
    ``mean``/``half``/``double`` (times the mean true count, rounded); a penalty set to ``match_l0`` is
    searched so that the trained SAE's mean L0 lands at the mean true count."""

    name: str
    kind: str
    hparams: dict = field(default_factory=dict)


@dataclass(frozen=True)
class SyntheticConfig:
    """The experiment: data spec, dictionary size, training settings, evaluation size, seeds, methods."""

    data: SyntheticSpec
    d_sae: int
    steps: int
    batch_size: int
    lr: float
    warmup_steps: int
    eval_tokens: int
    seeds: tuple[int, ...]
    methods: tuple[Method, ...]
    search_steps: int = 6
    step_sweep: tuple[int, ...] = ()

    @staticmethod
    def from_dict(raw: dict) -> SyntheticConfig:
        """Validate a config mapping (e.g. parsed YAML); raise ValueError naming the offending key."""
        known = {"data", "d_sae", "train", "eval_tokens", "seeds", "methods", "search_steps", "step_sweep"}
        unknown = sorted(set(raw) - known)
        if unknown:
            raise ValueError(f"unknown config key(s): {', '.join(unknown)}; known: {', '.join(sorted(known))}")
        for key in ("data", "d_sae", "train", "seeds", "methods"):
            if key not in raw:
                raise ValueError(f"config key {key!r} is missing")
        try:
            data = SyntheticSpec.from_dict(raw["data"])
        except (TypeError, ValueError) as e:
            raise ValueError(f"config key 'data': {e}") from None
        train_raw = dict(raw["train"])
        train_keys = {"steps", "batch_size", "lr", "warmup_steps"}
        if set(train_raw) != train_keys:
            raise ValueError(
                f"config key 'train' must have exactly {', '.join(sorted(train_keys))}; "
                f"got {', '.join(sorted(train_raw))}"
            )
        methods = []
        for i, m in enumerate(raw["methods"]):
            if not isinstance(m, dict) or set(m) - {"name", "kind", "hparams"} or "kind" not in m:
                raise ValueError(f"config key methods[{i}] must be a mapping with kind, optional name and hparams")
            if m["kind"] not in KINDS:
                raise ValueError(f"config key methods[{i}].kind={m['kind']!r}: unknown; known: {', '.join(KINDS)}")
            methods.append(Method(m.get("name", m["kind"]), m["kind"], dict(m.get("hparams") or {})))
        names = [m.name for m in methods]
        if len(set(names)) != len(names):
            raise ValueError("config key 'methods': method names must be unique")
        cfg = SyntheticConfig(
            data=data,
            d_sae=int(raw["d_sae"]),
            steps=int(train_raw["steps"]),
            batch_size=int(train_raw["batch_size"]),
            lr=float(train_raw["lr"]),
            warmup_steps=int(train_raw["warmup_steps"]),
            eval_tokens=int(raw.get("eval_tokens", 16384)),
            seeds=tuple(int(s) for s in raw["seeds"]),
            methods=tuple(methods),
            search_steps=int(raw.get("search_steps", 6)),
            step_sweep=tuple(int(s) for s in raw.get("step_sweep") or ()),
        )
        if any(s < 1 for s in cfg.step_sweep):
            raise ValueError(f"config key step_sweep={list(cfg.step_sweep)}: step counts must be positive")
        for key, value in (
            ("d_sae", cfg.d_sae),
            ("train.steps", cfg.steps),
            ("train.batch_size", cfg.batch_size),
            ("eval_tokens", cfg.eval_tokens),
            ("search_steps", cfg.search_steps),
        ):
            if value < 1:
                raise ValueError(f"config key {key}={value}: must be positive")
        if not cfg.seeds:
            raise ValueError("config key 'seeds' must list at least one seed")
        return cfg


def mean_true_count(spec: SyntheticSpec, n: int = 65536) -> float:
    """The mean number of active features per sample, estimated on ``n`` samples (seed 12345)."""
    _, coeff = spec.sample(n, torch.Generator().manual_seed(12345))
    return float(spec.true_counts(coeff).double().mean())


def resolve_hparams(method: Method, mean_count: float, d_sae: int) -> dict:
    """Hyperparameters with symbolic ``k`` values resolved (``match_l0`` penalties are left to the search)."""
    hp = dict(method.hparams)
    if isinstance(hp.get("k"), str):
        if hp["k"] not in K_RULES:
            raise ValueError(f"method {method.name}: k={hp['k']!r}; use a number or one of {', '.join(K_RULES)}")
        hp["k"] = int(min(d_sae, max(1, round(K_RULES[hp["k"]] * mean_count))))
    return hp


def train_and_evaluate(
    cfg: SyntheticConfig,
    kind: str,
    hparams: dict,
    seed: int,
    steps: int,
    x_eval: torch.Tensor,
    coeff_eval: torch.Tensor,
) -> dict:
    """Train one SAE on the seeded stream and score it on the held-out samples."""
    sae = create(kind, cfg.data.d_in, cfg.d_sae, seed=seed, dead_window=cfg.batch_size * 50, **hparams)
    tcfg = TrainConfig(steps=steps, lr=cfg.lr, warmup_steps=cfg.warmup_steps, seed=seed, progress=False)
    began = time.perf_counter()
    with tempfile.TemporaryDirectory() as run_dir:
        train(sae, cfg.data.batches(cfg.batch_size, seed=seed), tcfg, run_dir)
    seconds = time.perf_counter() - began
    sae.eval()
    metrics = ReconstructionMetrics(cfg.d_sae)
    acts_all = []
    with torch.no_grad():
        for xb in x_eval.split(4096):
            x_hat, acts = sae(xb)
            metrics.update(xb, x_hat, acts)
            acts_all.append(acts)
    acts = torch.cat(acts_all)
    l0 = (acts != 0).sum(dim=1)
    counts = cfg.data.true_counts(coeff_eval)
    match = match_dictionary(decoder_directions(sae), cfg.data.dictionary())
    record = {
        "reconstruction": metrics.compute(),
        "dictionary": {k: v for k, v in match.items() if k in ("mcc", "recovered", "mean_max_cos")},
        "sparsity_tracking": sparsity_tracking(counts, l0),
        "precision_recall": {
            k: v
            for k, v in latent_precision_recall(acts, coeff_eval, match["matched"]).items()
            if not isinstance(v, (np.ndarray, torch.Tensor, list))
        },
        "train_seconds": seconds,
    }
    counts_spec = cfg.data.counts
    if counts_spec.get("kind") == "mixture":
        record["simple_vs_complex"] = simple_vs_complex(counts, l0, counts_spec["simple"], counts_spec["complex"])
    return to_plain(record)


def match_penalty(
    cfg: SyntheticConfig,
    method: Method,
    hparams: dict,
    key: str,
    target: float,
    seed: int,
    x_val: torch.Tensor,
    coeff_val: torch.Tensor,
) -> tuple[float, dict]:
    """:func:`repro.guide.bisect_penalty` on ``key`` so that the mean L0 on the *validation* sample lands at
    ``target``; each probe trains for the full number of steps. Returns the chosen penalty and the search
    record (probes, ``bracketed``, ``matched``; :func:`repro.guide.search_outcome`)."""
    from repro.guide import search_outcome

    def measure(penalty: float) -> float:
        rec = train_and_evaluate(cfg, method.kind, {**hparams, key: penalty}, seed, cfg.steps, x_val, coeff_val)
        return rec["reconstruction"]["l0"]

    penalty, probes = bisect_penalty(measure, target, steps=cfg.search_steps)
    chosen = next(p["l0"] for p in probes if p["penalty"] == penalty)
    return penalty, {
        "key": key,
        "target": target,
        "probes": probes,
        "measured_on": "validation sample",
        **search_outcome(probes, target, chosen),
    }


VALIDATION_SEED = 24681357
EVALUATION_SEED = 987654321


def chance_mcc(cfg: SyntheticConfig, seed: int = 0) -> float:
    """MCC of a random dictionary of ``d_sae`` seeded Gaussian unit directions against the true one: the
    value a learned dictionary must beat."""
    g = torch.Generator().manual_seed(10_000 + seed)
    random = torch.randn(cfg.d_sae, cfg.data.d_in, generator=g)
    return float(match_dictionary(random, cfg.data.dictionary())["mcc"])


def step_sweep(
    cfg: SyntheticConfig,
    hparams_by_method: dict[str, dict],
    x_eval: torch.Tensor,
    coeff_eval: torch.Tensor,
    progress: bool = False,
    done: dict[str, dict] | None = None,
) -> list[dict]:
    """Every method retrained at each of ``cfg.step_sweep`` on the first seed (with that seed's
    hyperparameters, searched penalties included): EV, L0 and MCC per step count. ``done`` (method → its
    record at ``cfg.steps`` on that seed) is reused instead of training the same run again."""
    out, done = [], done or {}
    seed = cfg.seeds[0]
    for method in cfg.methods:
        for steps in cfg.step_sweep:
            rec = (
                done[method.name]
                if steps == cfg.steps and method.name in done
                else train_and_evaluate(
                    cfg, method.kind, hparams_by_method[method.name], seed, steps, x_eval, coeff_eval
                )
            )
            out.append(
                {
                    "method": method.name,
                    "steps": steps,
                    "ev": rec["reconstruction"]["ev"],
                    "l0": rec["reconstruction"]["l0"],
                    "mcc": rec["dictionary"]["mcc"],
                }
            )
            if progress:
                print(
                    f"{method.name:32s} {steps:6d} steps: EV {out[-1]['ev']:.3f} L0 {out[-1]['l0']:.2f} "
                    f"MCC {out[-1]['mcc']:.3f}",
                    flush=True,
                )
    return out


def plateau(sweep: list[dict], ev_tol: float = 0.01, mcc_tol: float = 0.01) -> dict[str, dict]:
    """Per method: the change of EV, MCC and L0 between the two longest runs of the step sweep, and
    ``plateaued`` (|ΔEV| ≤ ``ev_tol`` and |ΔMCC| ≤ ``mcc_tol``)."""
    out = {}
    for name in dict.fromkeys(r["method"] for r in sweep):
        mine = sorted((r for r in sweep if r["method"] == name), key=lambda r: r["steps"])
        if len(mine) < 2:
            continue
        a, b = mine[-2], mine[-1]
        d = {k: b[k] - a[k] for k in ("ev", "mcc", "l0")}
        out[name] = {
            "from_steps": a["steps"],
            "to_steps": b["steps"],
            **{f"delta_{k}": v for k, v in d.items()},
            "plateaued": bool(abs(d["ev"]) <= ev_tol and abs(d["mcc"]) <= mcc_tol),
        }
    return out


def run_synthetic(
    cfg: SyntheticConfig,
    out_dir: str | Path,
    figures_dir: str | Path | None = None,
    progress: bool = True,
    figure_prefix: str = "synthetic",
) -> dict:
    """Run every method on every seed; write the result files (and the figures
    ``<figure_prefix>_l0_vs_count`` and ``<figure_prefix>_mcc``, pdf and png); return the summary."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    began = time.perf_counter()
    mean_count = mean_true_count(cfg.data)
    x_eval, coeff_eval = cfg.data.sample(cfg.eval_tokens, torch.Generator().manual_seed(EVALUATION_SEED))
    x_val, coeff_val = cfg.data.sample(cfg.eval_tokens, torch.Generator().manual_seed(VALIDATION_SEED))
    runs, seed0_hparams = [], {}
    for method in cfg.methods:
        for seed in cfg.seeds:
            hp = resolve_hparams(method, mean_count, cfg.d_sae)
            search = None
            for key, value in list(hp.items()):
                if value == MATCH_L0:  # searched for every seed: a penalty found on one seed may not transfer
                    hp[key], search = match_penalty(
                        cfg, method, hp | {key: 1e-3}, key, mean_count, seed, x_val, coeff_val
                    )
            if seed == cfg.seeds[0]:
                seed0_hparams[method.name] = dict(hp)
            record = train_and_evaluate(cfg, method.kind, hp, seed, cfg.steps, x_eval, coeff_eval)
            runs.append(
                {
                    "method": method.name,
                    "kind": method.kind,
                    "hparams": hp,
                    "seed": seed,
                    "penalty_search": search,
                    **record,
                }
            )
            if progress:
                r = runs[-1]
                print(
                    f"{method.name:32s} seed {seed}: EV {r['reconstruction']['ev']:.3f}  "
                    f"L0 {r['reconstruction']['l0']:.2f}  Spearman {r['sparsity_tracking']['spearman']:.3f}  "
                    f"MCC {r['dictionary']['mcc']:.3f}  ({r['train_seconds']:.1f} s)",
                    flush=True,
                )
    summary = summarise(runs, [m.name for m in cfg.methods])
    chance = [chance_mcc(cfg, s) for s in cfg.seeds]
    first = {r["method"]: r for r in runs if r["seed"] == cfg.seeds[0]}
    sweep = step_sweep(cfg, seed0_hparams, x_eval, coeff_eval, progress, done=first) if cfg.step_sweep else []
    result = {
        "experiment": "ground-truth synthetic benchmark",
        "config": config_record(cfg),
        "mean_true_count": mean_count,
        "runs": runs,
        "summary": summary,
        "chance_mcc": {
            "mean": statistics.fmean(chance),
            "values": chance,
            "definition": f"MCC of {cfg.d_sae} seeded random Gaussian unit directions",
        },
        "step_sweep": sweep,
        "plateau": plateau(sweep),
        "seconds": time.perf_counter() - began,
        "provenance": provenance(),
    }
    atomic_write(out_dir / "results.json", lambda p: Path(p).write_text(json.dumps(result, indent=1)))
    atomic_write(out_dir / "summary.csv", lambda p: _write_summary_csv(p, summary))
    atomic_write(
        out_dir / "table.md",
        lambda p: Path(p).write_text(
            format_table(summary, mean_count, result["chance_mcc"]["mean"], result["plateau"])
        ),
    )
    if figures_dir is not None:
        from repro.experiments.synthetic_figures import plot_l0_vs_count, plot_mcc

        plot_l0_vs_count(runs, [m.name for m in cfg.methods], Path(figures_dir) / f"{figure_prefix}_l0_vs_count")
        plot_mcc(runs, [m.name for m in cfg.methods], Path(figures_dir) / f"{figure_prefix}_mcc")
    return result


SUMMARY_COLUMNS = (
    ("ev", ("reconstruction", "ev")),
    ("l0", ("reconstruction", "l0")),
    ("spearman", ("sparsity_tracking", "spearman")),
    ("slope", ("sparsity_tracking", "slope")),
    ("intercept", ("sparsity_tracking", "intercept")),
    ("mcc", ("dictionary", "mcc")),
    ("recovered", ("dictionary", "recovered")),
    ("precision", ("precision_recall", "mean_precision")),
    ("recall", ("precision_recall", "mean_recall")),
    ("l0_simple", ("simple_vs_complex", "simple", "mean")),
    ("l0_complex", ("simple_vs_complex", "complex", "mean")),
)


def _get(record: dict, path: tuple[str, ...]) -> float:
    for key in path:
        if not isinstance(record, dict) or key not in record:
            return math.nan
        record = record[key]
    return float(record) if record is not None else math.nan


def summarise(runs: list[dict], order: list[str]) -> list[dict]:
    """Mean and standard deviation over seeds of every summary column, per method (in ``order``)."""
    rows = []
    for name in order:
        mine = [r for r in runs if r["method"] == name]
        row: dict[str, Any] = {
            "method": name,
            "kind": mine[0]["kind"],
            "hparams": mine[0]["hparams"],
            "seeds": len(mine),
        }
        for col, path in SUMMARY_COLUMNS:
            values = [v for v in (_get(r, path) for r in mine) if not math.isnan(v)]
            row[col] = statistics.fmean(values) if values else math.nan
            row[f"{col}_std"] = statistics.stdev(values) if len(values) > 1 else 0.0
        searches = [r["penalty_search"] for r in mine if r.get("penalty_search")]
        row["search_matched"] = statistics.fmean(float(s["matched"]) for s in searches) if searches else math.nan
        rows.append(row)
    return rows


def format_table(
    summary: list[dict], mean_count: float, chance: float | None = None, plateaus: dict[str, dict] | None = None
) -> str:
    """Markdown table: mean ± std over seeds, a chance row for MCC, and marks for penalty searches that did
    not match their L0 target and for methods the step sweep found still moving."""
    cols = [c for c, _ in SUMMARY_COLUMNS if any(not math.isnan(r[c]) for r in summary)]
    plateaus = plateaus or {}
    lines = [
        f"Mean true count per sample: {mean_count:.2f}. Mean ± std over seeds. L0 ≈ intercept + slope × "
        "true count (least squares over held-out samples).",
        "",
        "| method | " + " | ".join(cols) + " |",
        "|---|" + "---|" * len(cols),
    ]
    for r in summary:
        cells = [f"{r[c]:.3f} ± {r[c + '_std']:.3f}" if not math.isnan(r[c]) else "–" for c in cols]
        marks = []
        if not math.isnan(r.get("search_matched", math.nan)) and r["search_matched"] < 1:
            marks.append(f"L0 search not matched on {1 - r['search_matched']:.0%} of seeds: not an L0-matched baseline")
        if r["method"] in plateaus and not plateaus[r["method"]]["plateaued"]:
            p = plateaus[r["method"]]
            marks.append(
                f"not plateaued ({p['from_steps']} → {p['to_steps']} steps: ΔEV {p['delta_ev']:+.3f}, "
                f"ΔMCC {p['delta_mcc']:+.3f})"
            )
        name = r["method"] + (f" ({'; '.join(marks)})" if marks else "")
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    if chance is not None and "mcc" in cols:
        lines.append(
            "| chance: random dictionary of the same width | "
            + " | ".join(f"{chance:.3f}" if c == "mcc" else "–" for c in cols)
            + " |"
        )
    return "\n".join(lines) + "\n"


def _write_summary_csv(path: str, summary: list[dict]) -> None:
    with open(path, "w", newline="") as f:
        cols = ["method", "kind", "hparams", "seeds"] + [c for col, _ in SUMMARY_COLUMNS for c in (col, col + "_std")]
        writer = csv.DictWriter(f, fieldnames=cols)
        writer.writeheader()
        for r in summary:
            writer.writerow({k: (json.dumps(r[k]) if k == "hparams" else r[k]) for k in cols})


def config_record(cfg: SyntheticConfig) -> dict:
    """The config as plain JSON."""
    return {
        "data": cfg.data.to_dict(),
        "d_sae": cfg.d_sae,
        "train": {"steps": cfg.steps, "batch_size": cfg.batch_size, "lr": cfg.lr, "warmup_steps": cfg.warmup_steps},
        "eval_tokens": cfg.eval_tokens,
        "seeds": list(cfg.seeds),
        "search_steps": cfg.search_steps,
        "step_sweep": list(cfg.step_sweep),
        "methods": [{"name": m.name, "kind": m.kind, "hparams": m.hparams} for m in cfg.methods],
    }
