"""Tuning guidance: the sparsity a sparsemax SAE chose, handed to SAEs that need it set by hand.

The paper claims that the sparsemax SAE's automatic, per-input sparsity can tune the other SAEs. From a
trained run's mean L0 on the held-out tail of its *training* split (the trainer's validation tokens,
``final_validation`` in train.json; never the test split, which the guided runs are evaluated on;
L0 = mean over tokens of #{i : a_ti ≠ 0}, the ``l0`` of :mod:`repro.metrics`):

- TopK and BatchTopK: k = max(1, round(L0));
- ReLU: the L1 coefficient λ at which a ReLU SAE of the same width lands at the same L0, read off ReLU runs
  already trained on the same cache with the same held-out tail (the *probes*: ordinary training runs, such as
  a sweep of λ; guidance never trains): log λ is interpolated linearly in log L0 between the nearest probes on
  either side of the target (:func:`relu_from_probes`; L0 falls as λ grows). Every probe is returned, with
  ``bracketed`` (probes on both sides of the target) and ``matched`` (the chosen λ's L0, measured or
  interpolated, within a factor :data:`MATCH_RATIO` of the target); without bracketing probes the closest probe
  is chosen and reported as not bracketed, never as a match it is not.

:func:`bisect_penalty` is the adaptive search of the ground-truth benchmark (:mod:`repro.experiments.synthetic`),
where every probe is a short training on synthetic data.
"""

from __future__ import annotations

import math
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


def relu_from_probes(probes: list[dict], target: float) -> dict:
    """The ReLU L1 coefficient at L0 ``target`` from ``probes`` ([{"penalty", "l0"}], trained runs), as the
    module docstring says: {l1_coefficient, l0 (measured or interpolated), probes, bracketed, matched,
    match_ratio, method}. ValueError without probes or with a non-positive penalty or L0."""
    if not probes:
        raise ValueError("ReLU guidance needs at least one trained ReLU run (a probe)")
    if any(not (p["penalty"] > 0 and p["l0"] > 0) for p in probes):
        raise ValueError(f"every probe needs a positive penalty and L0; got {probes}")
    above = [p for p in probes if p["l0"] >= target]
    below = [p for p in probes if p["l0"] <= target]
    if above and below:
        hi = min(above, key=lambda p: p["l0"])  # the nearest probe denser than the target
        lo = max(below, key=lambda p: p["l0"])  # the nearest sparser one
        if hi["l0"] == lo["l0"]:
            penalty, l0 = hi["penalty"], hi["l0"]
        else:
            w = math.log(target / lo["l0"]) / math.log(hi["l0"] / lo["l0"])
            penalty, l0 = math.exp(math.log(lo["penalty"]) + w * math.log(hi["penalty"] / lo["penalty"])), target
        method = "log-log interpolation between the nearest probes on either side"
    else:
        best = min(probes, key=lambda p: abs(math.log((p["l0"] + 0.1) / target)))
        penalty, l0, method = best["penalty"], best["l0"], "the closest probe (the probes do not bracket the target)"
    outcome = search_outcome(probes, target, l0)
    return {"l1_coefficient": penalty, "l0": l0, "probes": probes, **outcome, "method": method}


def _probe(run_dir: str | Path, source: dict) -> dict:
    """{run, penalty, l0} of a trained ReLU run usable as a probe for ``source`` (a run record): same width,
    same activation cache and held-out tail; ValueError naming the run otherwise."""
    from repro import run_record

    rec = run_record.read(run_dir)
    val = (rec.get("training") or {}).get("final_validation")
    same = (rec.get("data") or {}).get("spec_hash") == (source.get("data") or {}).get("spec_hash")
    if rec.get("kind") != "relu" or not val or not same:
        raise ValueError(
            f"{run_dir}: a ReLU probe must be a relu run trained on the source run's cache with validation tokens"
        )
    if (rec["sae_config"]["d_sae"], rec["data"].get("train_tokens")) != (
        source["sae_config"]["d_sae"],
        source["data"].get("train_tokens"),
    ):
        raise ValueError(f"{run_dir}: a ReLU probe must have the source run's width and held-out tail")
    return {"run": str(run_dir), "penalty": float(rec["sae_config"]["l1_coefficient"]), "l0": float(val["l0"])}


def guide_from_run(run_dir: str | Path, relu_probes: list[str | Path] = ()) -> dict:
    """Guidance from a trained run (module docstring): its held-out L0, k for the guided kinds
    (:func:`repro.kinds.guided_kinds`) and, given ReLU probe runs, the ReLU L1 coefficient. Nothing is trained."""
    from repro import run_record
    from repro.kinds import guided_kinds

    source = run_record.read(run_dir)
    val = (source.get("training") or {}).get("final_validation")
    if not val:
        raise ValueError(
            f"{run_dir}: train.json has no final_validation (the trainer's held-out tail of the "
            "training split), which guidance reads its L0 from; retrain with validation tokens"
        )
    l0 = float(val["l0"])
    out = {
        "source_run": str(run_dir),
        "source_kind": source["kind"],
        "d_sae": source["sae_config"]["d_sae"],
        "l0": l0,
        "l0_split": "training split, held-out tail (trainer validation tokens)",
        "n_tokens": val.get("n_tokens"),
        **{kind: {"k": k_from_l0(l0)} for kind in guided_kinds()},
    }
    if relu_probes:
        out["relu"] = relu_from_probes([_probe(r, source) for r in relu_probes], max(l0, 1e-3))
    return out
