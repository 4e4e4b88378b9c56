"""Tuning guidance: the sparsity a sparsemax SAE chose, handed to SAEs that need it set by hand.

The paper claims that the sparsemax SAE's automatic, per-input sparsity can tune the other SAEs. From a
trained run's measured mean L0 on held-out tokens (L0 = mean over tokens of #{i : a_ti ≠ 0}, the
``l0`` of :mod:`repro.metrics`; the official SAE's support can hold scores ≤ 0, so ``l0_pos`` is
reported beside it):

- TopK and BatchTopK: k = max(1, round(L0));
- ReLU: the L1 coefficient λ whose trained SAE lands at the same L0, found by :func:`bisect_penalty`:
  bisection on log10 λ in [lo, hi] (default [-2, 2]: the penalties act on normalised inputs, E||x_n||^2 = d,
  where useful ReLU coefficients lie around 1-10), ``steps`` probes (default 6); each probe trains a
  ReLU SAE of the same width on the same cache with the same training settings (optionally fewer
  steps) and measures its L0 on the same held-out tokens; L0 falls as λ grows, so a probe above the
  target moves the lower end up. The chosen λ is the probe whose L0 is closest to the target in log
  ratio, log((L0 + 0.1) / target). Every probe is returned, so a reader can see how close it came.
"""

from __future__ import annotations

import math
import tempfile
from collections.abc import Callable
from pathlib import Path


def bisect_penalty(measure: Callable[[float], float], target: float, *, lo: float = -2.0, hi: float = 2.0,
                   steps: int = 6) -> tuple[float, list[dict]]:
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


def guide_from_run(run_dir: str | Path, settings=None, *, relu: bool = True, search_steps: int = 6,
                   train_steps: int | None = None, progress: bool = False) -> dict:
    """Guidance from a trained run (module docstring): its held-out L0, k for topk/batchtopk and, with
    ``relu``, the searched ReLU L1 coefficient. ``train_steps`` shortens the probes' training (default:
    the run's own step count)."""
    from repro.cache import ActivationCache
    from repro.evaluate import EvalSettings, RunData
    from repro.sae import create
    from repro.train import TrainConfig, train

    run = RunData(run_dir, settings or EvalSettings(), pooled=False)
    rec = run.encoded("test").reconstruction
    l0 = float(rec["l0"])
    k = k_from_l0(l0)
    out = {"source_run": str(run_dir), "source_kind": run.sae.kind, "d_sae": run.sae.cfg.d_sae,
           "l0": l0, "l0_pos": rec["l0_pos"], "l0_quantiles": rec["l0_quantiles"], "n_tokens": rec["n_tokens"],
           "topk": {"k": k}, "batchtopk": {"k": k}}
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
    test_cache = ActivationCache.open(run.cache("test"))

    def measure(penalty: float) -> float:
        from repro.evals.latents import encode_cache

        sae = create("relu", cache.d_model, run.sae.cfg.d_sae, seed=cfg.seed, l1_coefficient=penalty)
        with tempfile.TemporaryDirectory() as tmp:
            train(sae, cache.batches(batch_size, seed=cfg.seed, stop=train_tokens), cfg, tmp)
        l0_probe = encode_cache(sae, test_cache, pooled=False, top_k=1).reconstruction["l0"]
        if progress:
            print(f"  relu l1_coefficient={penalty:.3g}: L0 {l0_probe:.1f} (target {l0:.1f})")
        return l0_probe

    penalty, probes = bisect_penalty(measure, max(l0, 1e-3), steps=search_steps)
    out["relu"] = {"l1_coefficient": penalty, "probes": probes, "train_steps": cfg.steps,
                   "search": f"bisection on log10 l1_coefficient in [-2, 2], {search_steps} probes"}
    return out
