"""Validation and the training record of :func:`repro.train.train`: held-out metrics
(:func:`validation_metrics`) at the steps of :func:`validation_steps`, the convergence verdict
(:func:`convergence`) over the window of :func:`convergence_window`, the sparsity penalty's share of the loss
(:func:`penalty_share`), and the record of ``train.json`` with its warnings (:func:`training_record`); the
rules are in the module docstring of :mod:`repro.train`."""

from __future__ import annotations

import csv
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import Tensor

from repro.metrics import ReconstructionMetrics
from repro.sae.base import SAE
from repro.train_config import TrainConfig

CONVERGED_RTOL = 0.02  # the plateau window improves held-out NMSE by less than this (relative)
PLATEAU_WINDOW = 0.25  # fraction of the run over which convergence is judged (:func:`convergence_window`)
PENALTY_SHARE_MIN = 1e-3  # a sparsity term below this share of the loss is inert
L0_DRIFT_MAX = 0.10  # held-out L0 moving more than this (relative) over the plateau window is worth a warning


def convergence_window(cfg: TrainConfig) -> tuple[float, float]:
    """(start, end) fractions of the run over which :func:`convergence` compares held-out NMSE: the
    ``PLATEAU_WINDOW`` that ends where the lr decay begins, so that annealing does not pass for learning;
    the last ``PLATEAU_WINDOW`` of the run when there is no decay or it starts before half the run (too
    early for a constant-lr plateau to show)."""
    decays = cfg.decay != "none" and 0.5 <= cfg.decay_start < 1
    end = cfg.decay_start if decays else 1.0
    return end - PLATEAU_WINDOW, end


def validation_steps(cfg: TrainConfig) -> list[int]:
    """The 1-based steps after which held-out metrics are recorded: ``validate_at`` and both ends of the
    convergence window."""
    fractions = {*cfg.validate_at, *convergence_window(cfg)}
    return sorted({min(cfg.steps, max(1, round(f * cfg.steps))) for f in fractions})


@dataclass
class _RunState:
    """What a run carries across checkpoints besides weights and moments: the data-dependent
    initialisation's record, the resolved dead-latent window, the thresholds' mean at the start, and the
    validation records so far."""

    init: dict
    dead_window_tokens: int
    tokens_per_step: int
    thresholds_start: float | None
    validation: list[dict]


# ----- validation and the training record -------------------------------------------------------------
@torch.no_grad()
def validation_metrics(sae: SAE, tokens: Tensor, batch_size: int = 4096) -> dict[str, float]:
    """Held-out reconstruction metrics of ``sae`` (eval mode) on ``tokens``: nmse, explained variance, L0,
    dead fraction (:class:`repro.metrics.ReconstructionMetrics`)."""
    sae.eval()
    device = next(sae.parameters()).device
    acc = ReconstructionMetrics(sae.cfg.d_sae)
    for lo in range(0, len(tokens), batch_size):
        x = tokens[lo : lo + batch_size].to(device)
        x_hat, acts = sae(x)
        acc.update(x, x_hat, acts)
    m = acc.compute()
    return {
        "nmse": m["nmse"],
        "ev": m["explained_variance"],
        "l0": m["l0"],
        "dead_fraction": m["dead_fraction"],
        "n_tokens": m["n_tokens"],
    }


def _relative_change(before: dict, after: dict, key: str) -> float:
    return (after[key] - before[key]) / before[key] if before[key] else 0.0


def convergence(
    validation: list[dict], window: tuple[float, float] = (1 - PLATEAU_WINDOW, 1.0), rtol: float = CONVERGED_RTOL
) -> dict:
    """The convergence record from the validation records (``step``, ``fraction``, ``nmse``, ``l0``):

    - ``plateau_improvement`` = (NMSE_a - NMSE_b) / NMSE_a between the records a, b nearest the two ends
      of ``window`` (:func:`convergence_window`), and ``plateau_l0_change`` = (L0_b - L0_a) / L0_a;
    - ``converged`` = plateau_improvement < ``rtol``;
    - ``last_quarter_improvement`` and ``last_quarter_l0_change``: the same from the record nearest 75 %
      to the last one, for information (with a decay, it holds the annealing's gain).

    Everything None when there are fewer than two records."""
    if len(validation) < 2:
        return {"converged": None, "plateau_improvement": None, "last_quarter_improvement": None}
    start, end = window
    b = min(validation, key=lambda r: (abs(r["fraction"] - end), -r["step"]))
    earlier = [r for r in validation if r["step"] < b["step"]] or validation[:1]
    a = min(earlier, key=lambda r: abs(r["fraction"] - start))
    last = validation[-1]
    ref = min(validation[:-1], key=lambda r: abs(r["fraction"] - 0.75))
    improvement = -_relative_change(a, b, "nmse")
    return {
        "converged": bool(improvement < rtol),
        "plateau_improvement": improvement,
        "plateau_l0_change": _relative_change(a, b, "l0"),
        "from_step": a["step"],
        "to_step": b["step"],
        "last_quarter_improvement": -_relative_change(ref, last, "nmse"),
        "last_quarter_l0_change": _relative_change(ref, last, "l0"),
    }


def penalty_share(log_path: Path, steps: int) -> float | None:
    """Mean sparsity term over mean loss across the last quarter of the logged steps (None when the kind
    has no sparsity term)."""
    with open(log_path, newline="") as f:
        rows = [r for r in csv.DictReader(f) if int(r["step"]) > 0.75 * steps]
    if not rows or "sparsity_loss" not in rows[0]:
        return None
    loss = sum(float(r["loss"]) for r in rows)
    return sum(float(r["sparsity_loss"]) for r in rows) / loss if loss else None


def training_record(
    sae: SAE, cfg: TrainConfig, state: _RunState, finish: dict, final: dict | None, log_path: Path
) -> dict:
    """The training record of ``train.json``: initialisation, dead-latent window, validation curve, final
    held-out metrics, convergence, penalty share, thresholds and warnings."""
    conv = convergence(state.validation, convergence_window(cfg))
    share = penalty_share(log_path, cfg.steps)
    theta = sae.thresholds()
    thresholds = None
    if theta is not None:
        start = state.thresholds_start
        thresholds = {"mean_start": start, "mean_end": float(theta.double().mean())}
        if start is not None:
            thresholds["mean_abs_change"] = float((theta.double() - start).abs().mean())
    warnings = []
    span = f"steps {conv.get('from_step')}-{conv.get('to_step')}"
    if conv["converged"] is False:
        gain = 100 * conv["plateau_improvement"]
        warnings.append(
            f"not converged: held-out NMSE still improved by {gain:.1f} % over {span}, before any "
            f"lr decay (threshold {100 * CONVERGED_RTOL:g} %)"
        )
    if conv.get("plateau_l0_change") is not None and abs(conv["plateau_l0_change"]) > L0_DRIFT_MAX:
        drift = 100 * conv["plateau_l0_change"]
        warnings.append(
            f"the sparsity is still moving: held-out L0 changed by {drift:+.1f} % over {span} "
            "(so NMSE alone does not show convergence)"
        )
    if share is not None and share < PENALTY_SHARE_MIN:
        l0 = final["l0"] if final else None
        cause = (
            "the code has collapsed"
            if l0 is not None and l0 < 1
            else "the coefficient is too small for this input scale"
        )
        cause += f" (held-out L0 {l0:.1f})" if l0 is not None else ""
        warnings.append(
            f"sparsity penalty below {PENALTY_SHARE_MIN:g} of the loss over the last quarter "
            f"({share:.2e}): it does not shape the code; {cause}"
        )
    if thresholds and thresholds["mean_start"] and thresholds.get("mean_abs_change") is not None:
        if thresholds["mean_abs_change"] < 0.01 * abs(thresholds["mean_start"]):
            warnings.append(
                f"the thresholds barely moved: mean |change| {thresholds['mean_abs_change']:.3g} from "
                f"a mean of {thresholds['mean_start']:.3g}"
            )
    return {
        "data_init": state.init,
        "finish": finish,
        "dead_window_tokens": sae.dead_window_tokens,
        "tokens_per_step": state.tokens_per_step,
        "tokens_seen": cfg.steps * state.tokens_per_step,
        "validation": state.validation,
        "final_validation": final,
        **conv,
        "penalty_share": share,
        "thresholds": thresholds,
        "warnings": warnings,
    }
