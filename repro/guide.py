"""Tuning guidance: the sparsity a sparsemax SAE chose, handed to SAEs that need it set by hand.

The paper claims that the sparsemax SAE's automatic, per-input sparsity can tune the other SAEs. From a
trained run's mean L0 on the held-out tail of its *training* split (the trainer's validation tokens,
``final_validation`` in train.json; never the test split, which the guided runs are evaluated on;
L0 = mean over tokens of #{i : a_ti ≠ 0}, the ``l0`` of :mod:`repro.metrics`):

- TopK and BatchTopK: k = max(1, round(L0));
- ReLU: the L1 coefficient λ whose trained SAE lands at the same L0, found by :func:`bisect_penalty`:
  bisection on log10 λ in [lo, hi] (default [-2, 2]: the penalties act on normalised inputs, E||x_n||^2 = d,
  where useful ReLU coefficients lie around 1-10), ``steps`` probes (default 6); each probe trains a
  ReLU SAE of the same width on the same cache with the same training settings (optionally fewer
  steps) and measures its L0 on the same held-out tokens; L0 falls as λ grows, so a probe above the
  target moves the lower end up. The chosen λ is the probe whose L0 is closest to the target in log
  ratio, log((L0 + 0.1) / target). Every probe is returned, so a reader can see how close it came, with
  ``bracketed`` (some probe landed at or above the target and some at or below) and ``matched`` (the
  chosen probe within a factor :data:`MATCH_RATIO` of the target): a search that is not matched is
  reported as such, never as a match.
"""

from __future__ import annotations

import math
import tempfile
from collections.abc import Callable
from pathlib import Path

MATCH_RATIO = 1.25


def search_outcome(probes: list[dict], target: float, chosen_l0: float) -> dict:
    """``bracketed``: probes on both sides of ``target``; ``matched``: the chosen L0 within a factor
    :data:`MATCH_RATIO` of it."""
    l0s = [p["l0"] for p in probes]
    ratio = (chosen_l0 + 0.1) / target
    return {
        "bracketed": bool(min(l0s) <= target <= max(l0s)),
        "matched": bool(1 / MATCH_RATIO <= ratio <= MATCH_RATIO),
        "match_ratio": MATCH_RATIO,
    }


def bisect_penalty(
    measure: Callable[[float], float], target: float, *, lo: float = -2.0, hi: float = 2.0, steps: int = 6
) -> tuple[float, list[dict]]:
    """The penalty p = 10**e, e in [lo, hi], whose ``measure(p)`` (an L0, decreasing in p) is closest to
    ``target`` after ``steps`` bisection probes (see the module docstring); returns (p, probes)."""
    if not (target > 0 and steps >= 1 and lo < hi):
        raise ValueError(f"bisect_penalty needs target > 0, steps >= 1 and lo < hi; got {target}, {steps}, {lo}, {hi}")
    probes = []
    for _ in range(steps):
        mid = (lo + hi) / 2
        l0 = float(measure(10**mid))
        probes.append({"penalty": 10**mid, "l0": l0})
        lo, hi = (mid, hi) if l0 > target else (lo, mid)
    best = min(probes, key=lambda p: abs(math.log((p["l0"] + 0.1) / target)))
    return best["penalty"], probes


def k_from_l0(l0: float) -> int:
    """k for TopK/BatchTopK at a measured mean L0: max(1, round(L0))."""
    if not math.isfinite(l0) or l0 < 0:
        raise ValueError(f"a measured L0 must be a finite number >= 0, got {l0}")
    return max(1, round(l0))


def guide_from_run(
    run_dir: str | Path,
    settings=None,
    *,
    relu: bool = True,
    search_steps: int = 6,
    train_steps: int | None = None,
    progress: bool = False,
) -> dict:
    """Guidance from a trained run (module docstring): its held-out L0, k for topk/batchtopk and, with
    ``relu``, the searched ReLU L1 coefficient. ``train_steps`` shortens the probes' training (default:
    the run's own step count)."""
    from repro.cache import ActivationCache
    from repro.evaluate import EvalSettings, RunData
    from repro.kinds import guided_kinds
    from repro.sae import create
    from repro.train import TrainConfig, train

    run = RunData(run_dir, settings or EvalSettings(), pooled=False)
    val = (run.summary.get("training") or {}).get("final_validation")
    if not val:
        raise ValueError(
            f"{run_dir}: train.json has no final_validation (the trainer's held-out tail of the "
            "training split), which guidance reads its L0 from; retrain with validation tokens"
        )
    l0 = float(val["l0"])
    k = k_from_l0(l0)
    out = {
        "source_run": str(run_dir),
        "source_kind": run.sae.kind,
        "d_sae": run.sae.cfg.d_sae,
        "l0": l0,
        "l0_split": "training split, held-out tail (trainer validation tokens)",
        "n_tokens": val.get("n_tokens"),
        **{kind: {"k": k} for kind in guided_kinds()},
    }
    if not relu:
        return out
    tc = dict(run.summary["train_config"])
    tc.update(progress=False, checkpoint_every=0, **({"steps": train_steps} if train_steps else {}))
    tc["betas"] = tuple(tc["betas"])
    tc["validate_at"] = tuple(tc.get("validate_at", (1.0,)))
    cfg = TrainConfig(**tc)
    cache = ActivationCache.open(run.summary["data"]["cache"])
    batch_size = int(run.summary["data"].get("batch_size", 4096))
    train_tokens = run.summary["data"].get("train_tokens")  # the source run's validation slice stays out
    validation = cache.tokens(train_tokens) if train_tokens is not None and train_tokens < cache.n_tokens else None
    if validation is None:
        raise ValueError(f"{run_dir}: its cache has no validation tail to measure the probes' L0 on")

    def measure(penalty: float) -> float:
        from repro.train import validation_metrics

        sae = create(
            "relu", cache.d_model, run.sae.cfg.d_sae, seed=cfg.seed, l1_coefficient=penalty, input_norm="scalar"
        )
        with tempfile.TemporaryDirectory() as tmp:
            train(sae, cache.batches(batch_size, seed=cfg.seed, stop=train_tokens), cfg, tmp)
        l0_probe = validation_metrics(sae, validation)["l0"]
        if progress:
            print(f"  relu l1_coefficient={penalty:.3g}: L0 {l0_probe:.1f} (target {l0:.1f})")
        return l0_probe

    penalty, probes = bisect_penalty(measure, max(l0, 1e-3), steps=search_steps)
    chosen = next(p["l0"] for p in probes if p["penalty"] == penalty)
    out["relu"] = {
        "l1_coefficient": penalty,
        "probes": probes,
        "train_steps": cfg.steps,
        **search_outcome(probes, max(l0, 1e-3), chosen),
        "search": f"bisection on log10 l1_coefficient in [-2, 2], {search_steps} probes",
    }
    return out
