"""The catalogue of evaluations: for each, what computes it, where it applies and how its results flatten into
the tidy metrics CSV, declared once.

``repro evaluate`` runs an evaluation through its ``compute`` (a function of :class:`repro.evaluate.RunData`
returning ``(results, splits read)``; given as ``"module:function"`` so that this module stays free of torch),
the workflow's config check and ``repro evaluate --eval all`` read ``causal_only``, and
:func:`repro.report.aggregate.rows_of` writes the metrics ``flatten`` returns. A new evaluation is its module
plus one :func:`declare` (``tests/test_evaluate.py`` adds a toy one that way). The metric names per evaluation
are listed in :mod:`repro.report.aggregate`.
"""

from __future__ import annotations

import importlib
import math
from collections.abc import Callable
from dataclasses import dataclass


@dataclass(frozen=True)
class Evaluation:
    """name; compute: ``"module:function"`` or the function itself, ``f(run) -> (results, splits)``; flatten:
    ``f(results) -> {metric: float}`` (the tidy CSV's rows); causal_only: it needs a causal language model
    (backbone spec family ``causal-lm``)."""

    name: str
    compute: str | Callable
    flatten: Callable[[dict], dict[str, float]]
    causal_only: bool = False

    def function(self) -> Callable:
        """The computing function (imported on first use when given by name)."""
        if callable(self.compute):
            return self.compute
        module, _, attr = self.compute.partition(":")
        return getattr(importlib.import_module(module), attr)

    def applies_to(self, backbone_spec: dict) -> bool:
        """Whether it applies to a backbone with this spec (``repro.backbones`` ``spec()``)."""
        return not self.causal_only or backbone_spec.get("family") == "causal-lm"


EVALUATIONS: dict[str, Evaluation] = {}


def declare(evaluation: Evaluation) -> Evaluation:
    """Add ``evaluation`` to the catalogue (one entry per name)."""
    if evaluation.name in EVALUATIONS or evaluation.name == "all":
        raise ValueError(f"evaluation {evaluation.name!r} is already declared (or reserved)")
    EVALUATIONS[evaluation.name] = evaluation
    return evaluation


def get(name: str) -> Evaluation:
    """The entry of ``name``; ValueError listing the declared ones otherwise."""
    if name not in EVALUATIONS:
        raise ValueError(f"unknown evaluation {name!r}; known: {', '.join(EVALUATIONS)}")
    return EVALUATIONS[name]


def names() -> tuple[str, ...]:
    """The declared evaluations, in declaration order."""
    return tuple(EVALUATIONS)


# ----------------------------------------------------------------------------- flattening into the CSV
def scalars(d: dict, prefix: str = "") -> dict[str, float]:
    """The int and float entries of ``d`` (not bools) as floats, keys prefixed."""
    return {prefix + k: float(v) for k, v in d.items() if isinstance(v, (int, float)) and not isinstance(v, bool)}


def ci_bounds(results: dict) -> dict[str, float]:
    """The bootstrap intervals of ``results["ci95"]`` ({metric: {lo, hi}}) as ``<metric>_ci_lo/_ci_hi``."""
    return {
        f"{metric}_ci_{b}": float(ci[b]) for metric, ci in (results.get("ci95") or {}).items() for b in ("lo", "hi")
    }


def _flatten_reconstruction(results: dict) -> dict[str, float]:
    out = scalars(results) | scalars(results.get("l0_quantiles") or {}, "l0_") | ci_bounds(results)
    if results.get("l0_calibration"):
        rho = results["l0_calibration"]["spearman_rho"]  # None in JSON when undefined (TopK: constant L0)
        out["l0_complexity_rho"] = math.nan if rho is None else float(rho)
    return out


def _flatten_topn(results: dict) -> dict[str, float]:
    gate = results.get("gate")
    return (
        scalars(results["mean_pct"])
        | ci_bounds(results)
        | ({} if gate is None else {"gate_usable": float(gate["usable"])})
    )


def _flatten_interpretability(results: dict) -> dict[str, float]:
    s, f = results["scores"], results["firing"]
    out = {
        f"{key}_{stat}": s[key][stat]
        for key in ("purity", "entropy", "entropy_official")
        for stat in ("mean", "median")
    }
    out |= {
        "baseline_purity": s["baseline"]["purity"],
        "baseline_entropy": s["baseline"]["entropy"],
        "n_alive": s["n_alive"],
        "n_scored": s["n_scored"],
        "n_dead": f["n_dead"],
    }
    return {k: (math.nan if v is None else float(v)) for k, v in out.items()}


for _evaluation in (
    Evaluation("reconstruction", "repro.evals.run_evals:evaluate_reconstruction", _flatten_reconstruction),
    Evaluation("interpretability", "repro.evals.run_evals:evaluate_interpretability", _flatten_interpretability),
    Evaluation("probing", "repro.evals.run_evals:evaluate_probing", lambda results: scalars(results["summary"])),
    Evaluation("topn", "repro.evals.run_evals:evaluate_topn", _flatten_topn),
    Evaluation("lm_loss", "repro.evals.run_evals:evaluate_lm_loss", scalars, causal_only=True),
):
    declare(_evaluation)

__all__ = ["EVALUATIONS", "Evaluation", "ci_bounds", "declare", "get", "names", "scalars"]
