"""The one trainer for every SAE kind.

Adam with linear warm-up, a linear decay to zero over the last 20 % of the steps and gradient-norm
clipping at 1.0 by default (Anthropic's April 2024 update; SAELens), on batches from any iterable of
``(..., d_in)`` tensors. Before the first step it takes a sample of the first training batches
(``sample_tokens``) for the SAE's data-dependent initialisation (:meth:`SAE.fit_to_data`: input scale,
b_dec); after the last one it hands the same sample to :meth:`SAE.finish_training` (BatchTopK's threshold
calibration). Dead-latent bookkeeping (AuxK) is scaled to the run (:func:`dead_window_for`).

With ``validation`` tokens (a fixed slice of the training cache held out from the batches, never the test
split) it records held-out NMSE, EV and L0 at 25, 50, 75 and 100 % of the steps and after
``finish_training``, and a convergence verdict (:func:`convergence`): ``converged`` when held-out NMSE
improves by less than 2 % relative over the quarter of the run that ends where the lr decay begins (the
last quarter when there is no decay: annealing the lr lowers NMSE by a few percent even on a plateau, so
a window holding the decay would measure the schedule, not the fit); the share of the loss taken by the
sparsity penalty over the last quarter; warnings when that share stays below 1e-3, when a threshold
never moves, when the run has not converged, or when held-out L0 still moves by more than 10 % over the
same window (a penalised kind can trade NMSE for sparsity, so NMSE alone does not show convergence).

The run folder holds:

- ``checkpoint/``: the latest checkpoint (``sae.safetensors`` + ``cfg.json`` with the kind's state and the
  weights' sha256, ``trainer.safetensors`` with the optimiser moments and the RNG state, ``trainer.json``
  with the step, the validation record so far and the sha256 of ``trainer.safetensors``), replaced
  atomically every ``checkpoint_every`` steps and at the end; both digests are checked on resume, so a
  damaged checkpoint stops with an error naming the file instead of resuming from garbage;
- ``log.csv``: one row per step (loss parts, L0, dead fraction, gradient norm before clipping, lr);
- ``sae/``: the final SAE, and ``train.json``: summary, convergence record and provenance, both written
  only when the run completes.

``resume=True`` continues from ``checkpoint/`` and skips the batches already consumed, so the
iterable must yield the same sequence every time it is iterated (e.g. a seeded reader). On CPU,
training 2N steps, or N steps + interruption + resume + N steps, gives bit-identical weights.

SIGTERM (what a batch scheduler sends on ``scancel``, preemption or the time limit, before SIGKILL) ends
the current step, writes a checkpoint there and raises :class:`TrainingInterrupted`, so that a resumed
run loses no steps.
"""

from __future__ import annotations

import csv
import dataclasses
import itertools
import json
import math
import os
import shutil
import signal
import tempfile
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file
from torch import Tensor
from tqdm import tqdm

from repro import run_record
from repro.files import atomic_write
from repro.metrics import ReconstructionMetrics
from repro.provenance import provenance
from repro.sae.base import DEFAULT_DEAD_WINDOW, SAE, file_sha256, load

CHECKPOINT_DIR = "checkpoint"
FINAL_DIR = "sae"
LOG_FILE = "log.csv"
SUMMARY_FILE = run_record.FILE  # the run record (repro/run_record.py)
TRAINER_WEIGHTS = "trainer.safetensors"
TRAINER_META = "trainer.json"
CONVERGED_RTOL = 0.02  # the plateau window improves held-out NMSE by less than this (relative)
PLATEAU_WINDOW = 0.25  # fraction of the run over which convergence is judged (:func:`convergence_window`)
PENALTY_SHARE_MIN = 1e-3  # a sparsity term below this share of the loss is inert
L0_DRIFT_MAX = 0.10  # held-out L0 moving more than this (relative) over the plateau window is worth a warning


class NonFiniteError(FloatingPointError):
    """A NaN or inf in a batch, the loss or a gradient; the message names the step and the tensor."""


class TrainingInterrupted(Exception):
    """SIGTERM arrived during training; a checkpoint was written at ``step``."""

    def __init__(self, step: int, run_dir: Path):
        super().__init__(
            f"interrupted by SIGTERM after step {step}; checkpoint written in {run_dir}: continue with --resume"
        )
        self.step = step


class _SigtermFlag:
    """Within the block, SIGTERM sets :attr:`raised` instead of ending the process (main thread only;
    elsewhere the handler cannot be installed and SIGTERM keeps its default action)."""

    def __init__(self) -> None:
        self.raised = False
        self._installed = threading.current_thread() is threading.main_thread()
        self._previous = None

    def __enter__(self) -> _SigtermFlag:
        if self._installed:
            self._previous = signal.signal(signal.SIGTERM, self._handle)
        return self

    def _handle(self, signum, frame) -> None:
        self.raised = True

    def __exit__(self, *exc) -> None:
        if self._installed:  # signal.signal returns None for a handler not set from Python: back to the default
            signal.signal(signal.SIGTERM, signal.SIG_DFL if self._previous is None else self._previous)


@dataclass(frozen=True)
class TrainConfig:
    """steps: optimiser steps. lr, betas, eps: Adam (official code: 4e-4, (0.9, 0.999), 1e-8).
    warmup_steps: lr factor min(1, (step + 1) / warmup_steps) (official: 500). decay: ``none``,
    ``linear`` or ``cosine`` from ``decay_start`` (a fraction of ``steps``) to ``min_lr_ratio * lr`` at
    the last step (default: linear to zero over the last 20 %, Anthropic's April 2024 update and SAELens).
    grad_clip: clip the global gradient norm at this value before each step (SAELens and overcomplete: 1.0;
    0 = off). seed: seeds torch's global RNG at the start. checkpoint_every: steps between checkpoints
    (0 = only at the end). sample_tokens: training tokens (from the first batches) given to the SAE's
    data-dependent initialisation and end-of-training calibration. dead_window_fraction,
    dead_window_max: a latent counts as dead once silent for min(dead_window_max, dead_window_fraction x the
    run's tokens) tokens, unless the SAE's own ``dead_window`` is set (:func:`dead_window_for`).
    validate_at: fractions of ``steps`` at which held-out metrics are recorded (the two ends of
    :func:`convergence_window` are always added). deterministic: switch on
    PyTorch's deterministic algorithms during training; not needed on CPU, where every kind's kernels are
    deterministic with one or two threads (the sparse paths gather with ``index_select``, whose backward is
    a deterministic ``index_add``; ``benchmarks/deterministic.py`` checks each kind and measured the switch
    at 0.92-1.09x per step there); on CUDA
    the index/scatter kernels accumulate with atomics, so bit-identical GPU runs need it (and
    ``CUBLAS_WORKSPACE_CONFIG``). progress: a tqdm bar."""

    steps: int
    lr: float = 4e-4
    betas: tuple[float, float] = (0.9, 0.999)
    eps: float = 1e-8
    warmup_steps: int = 500
    decay: str = "linear"
    decay_start: float = 0.8
    min_lr_ratio: float = 0.0
    grad_clip: float = 1.0
    seed: int = 0
    checkpoint_every: int = 0
    sample_tokens: int = 65_536
    dead_window_fraction: float = 0.05
    dead_window_max: int = DEFAULT_DEAD_WINDOW
    validate_at: tuple[float, ...] = (0.25, 0.5, 0.75, 1.0)
    deterministic: bool = False
    progress: bool = True

    def validate(self) -> None:
        """Raise ValueError naming the first invalid field."""

        def is_int(v) -> bool:
            return isinstance(v, int) and not isinstance(v, bool)

        def is_num(v) -> bool:
            return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)

        checks = [
            ("steps", is_int(self.steps) and self.steps > 0, "a positive integer"),
            ("lr", is_num(self.lr) and self.lr > 0, "a number > 0"),
            (
                "betas",
                isinstance(self.betas, (tuple, list))
                and len(self.betas) == 2
                and all(is_num(b) and 0 <= b < 1 for b in self.betas),
                "two numbers in [0, 1)",
            ),
            ("eps", is_num(self.eps) and self.eps > 0, "a number > 0"),
            ("warmup_steps", is_int(self.warmup_steps) and self.warmup_steps >= 0, "an integer >= 0"),
            ("decay", self.decay in ("none", "linear", "cosine"), "'none', 'linear' or 'cosine'"),
            ("decay_start", is_num(self.decay_start) and 0 <= self.decay_start <= 1, "a number in [0, 1]"),
            ("min_lr_ratio", is_num(self.min_lr_ratio) and 0 <= self.min_lr_ratio <= 1, "a number in [0, 1]"),
            ("grad_clip", is_num(self.grad_clip) and self.grad_clip >= 0, "a number >= 0 (0 = off)"),
            ("seed", is_int(self.seed), "an integer"),
            ("checkpoint_every", is_int(self.checkpoint_every) and self.checkpoint_every >= 0, "an integer >= 0"),
            ("sample_tokens", is_int(self.sample_tokens) and self.sample_tokens > 0, "a positive integer"),
            (
                "dead_window_fraction",
                is_num(self.dead_window_fraction) and 0 < self.dead_window_fraction <= 1,
                "a number in (0, 1]",
            ),
            ("dead_window_max", is_int(self.dead_window_max) and self.dead_window_max > 0, "a positive integer"),
            (
                "validate_at",
                isinstance(self.validate_at, (tuple, list)) and all(is_num(f) and 0 < f <= 1 for f in self.validate_at),
                "fractions in (0, 1]",
            ),
            ("deterministic", isinstance(self.deterministic, bool), "true or false"),
        ]
        for name, ok, expected in checks:
            if not ok:
                raise ValueError(f"invalid training setting {name}={getattr(self, name)!r}: expected {expected}")


def dead_window_for(cfg: TrainConfig, tokens_per_step: int) -> int:
    """Tokens of silence after which a latent counts as dead: min(dead_window_max, dead_window_fraction x
    steps x tokens_per_step), and at least one batch. Gao et al.'s 10M tokens assume runs of billions of
    tokens; on a run of a few million it would never fire (the review of December 2026 found AuxK inert)."""
    run_tokens = cfg.steps * tokens_per_step
    return int(max(tokens_per_step, min(cfg.dead_window_max, round(cfg.dead_window_fraction * run_tokens))))


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


def lr_factor(step: int, cfg: TrainConfig) -> float:
    """Multiplier of ``cfg.lr`` at 0-based ``step``: warm-up min(1, (step + 1) / warmup_steps), times the
    decay factor (1 before ``decay_start * steps``, then linear or cosine down to ``min_lr_ratio``)."""
    warm = min(1.0, (step + 1) / cfg.warmup_steps) if cfg.warmup_steps else 1.0
    start = round(cfg.decay_start * cfg.steps)
    if cfg.decay == "none" or step < start or cfg.steps - start <= 1:
        return warm
    frac = (step - start) / (cfg.steps - 1 - start)
    shape = 1 - frac if cfg.decay == "linear" else 0.5 * (1 + math.cos(math.pi * frac))
    return warm * (cfg.min_lr_ratio + (1 - cfg.min_lr_ratio) * shape)


@dataclass
class TrainResult:
    """What a finished run returns: steps done, the last step's loss parts, paths, wall time (s), and the
    training record of ``train.json`` (validation, convergence, warnings)."""

    steps: int
    last_parts: dict[str, float]
    run_dir: Path
    sae_dir: Path
    seconds: float
    record: dict = dataclasses.field(default_factory=dict)


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


def train(
    sae: SAE,
    batches: Iterable[Tensor],
    cfg: TrainConfig,
    run_dir: str | os.PathLike,
    *,
    resume: bool = False,
    on_step: Callable[[int, dict[str, float]], None] | None = None,
    data: dict | None = None,
    validation: Tensor | None = None,
) -> TrainResult:
    """Train ``sae`` in place for ``cfg.steps`` steps on ``batches``; see the module docstring.

    ``on_step(step, parts)`` is called after each step (1-based) once its checkpoint, if any, is
    written. ``data`` (JSON-serialisable, e.g. the activation cache's path and spec) is recorded in
    ``train.json`` under "data", so that evaluations can find the backbone, hook and dataset.
    ``validation`` (``(n, d_in)`` tokens held out from ``batches``) enables the convergence record. A run
    folder that already holds a checkpoint is refused unless ``resume`` is set.
    """
    cfg.validate()
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    ckpt = _find_checkpoint(run_dir)
    if ckpt is not None and not resume:
        raise FileExistsError(
            f"{run_dir} already holds a checkpoint: pass resume=True to continue it, or use an empty run folder"
        )
    _remove_stale_temporaries(run_dir)
    torch.manual_seed(cfg.seed)
    sample, tokens_per_step, batches = _training_sample(batches, cfg.sample_tokens, sae.cfg.d_in)
    optimizer = torch.optim.Adam(sae.parameters(), lr=cfg.lr, betas=cfg.betas, eps=cfg.eps)
    start = 0
    if ckpt is not None:
        start, state = _load_checkpoint(ckpt, sae, optimizer, cfg)
    else:
        state = _fresh_state(sae, sample, tokens_per_step, cfg)
    if sae.cfg.dead_window is None:
        sae.dead_window_tokens = state.dead_window_tokens
    _truncate_log(run_dir / LOG_FILE, start)
    sae.train()
    began = time.perf_counter()
    parts = _last_logged_parts(run_dir / LOG_FILE) if start == cfg.steps else {}
    bar = tqdm(total=cfg.steps, initial=start, disable=not cfg.progress, desc=f"train {sae.kind}", unit="step")
    was_deterministic = torch.are_deterministic_algorithms_enabled()
    was_warn_only = torch.is_deterministic_algorithms_warn_only_enabled()
    if cfg.deterministic:
        torch.use_deterministic_algorithms(True, warn_only=True)
    try:
        with _SigtermFlag() as sigterm:
            loop = _Loop(sae, optimizer, cfg, run_dir, state, validation, bar, on_step, sigterm)
            parts = loop.run(batches, start) or parts
    finally:
        torch.use_deterministic_algorithms(was_deterministic, warn_only=was_warn_only)
        bar.close()
    finish = sae.finish_training(sample)
    final = validation_metrics(sae, validation) if validation is not None else None
    sae.train()
    seconds = time.perf_counter() - began
    record = training_record(sae, cfg, state, finish, final, run_dir / LOG_FILE)
    sae_dir = _publish_final(run_dir, sae, cfg, parts, seconds, data, resumed_from=start, record=record)
    return TrainResult(cfg.steps, parts, run_dir, sae_dir, seconds, record)


def _training_sample(batches: Iterable[Tensor], n_tokens: int, d_in: int) -> tuple[Tensor, int, Iterable[Tensor]]:
    """``(sample, tokens_per_step, batches)``: the first training batches flattened to tokens, up to
    ``n_tokens`` rows, the token count of the first batch, and the batch sequence to train on (the same
    batches, read once: those taken for the sample come first)."""
    it = iter(batches)
    taken, rows, have = [], [], 0
    for batch in it:
        taken.append(batch)
        if not torch.is_floating_point(batch) or not bool(torch.isfinite(batch).all()):
            break  # the step that trains on it reports the bad batch; the sample stops before it
        flat = batch.reshape(-1, batch.shape[-1])
        rows.append(flat[: n_tokens - have].detach().float().cpu())
        have += len(rows[-1])
        if have >= n_tokens:
            break
    if not taken:
        raise ValueError("the training data is empty")
    if not rows:
        bad = taken[0]
        if not torch.is_floating_point(bad):
            raise ValueError(f"step 1: the batch has dtype {bad.dtype}; a floating-point tensor is needed")
        raise NonFiniteError("step 1: the input batch contains NaN or inf")
    if rows[0].shape[-1] != d_in:
        raise ValueError(f"the batches have width {rows[0].shape[-1]}, the SAE expects d_in={d_in}")
    return torch.cat(rows), len(taken[0].reshape(-1, d_in)), itertools.chain(taken, it)


def _fresh_state(sae: SAE, sample: Tensor, tokens_per_step: int, cfg: TrainConfig) -> _RunState:
    """Data-dependent initialisation and the run's constants, at step 0."""
    init = sae.fit_to_data(sample.to(next(sae.parameters()).device))
    theta = sae.thresholds()
    return _RunState(
        init=init,
        dead_window_tokens=dead_window_for(cfg, tokens_per_step),
        tokens_per_step=tokens_per_step,
        thresholds_start=None if theta is None else float(theta.double().mean()),
        validation=[],
    )


class _Loop:
    """Steps ``start`` .. ``cfg.steps - 1``: log, validate, checkpoint, callback. After a SIGTERM
    (``sigterm.raised``) it checkpoints the step just done and raises TrainingInterrupted."""

    def __init__(
        self,
        sae: SAE,
        optimizer: torch.optim.Optimizer,
        cfg: TrainConfig,
        run_dir: Path,
        state: _RunState,
        validation: Tensor | None,
        bar: tqdm,
        on_step: Callable[[int, dict[str, float]], None] | None,
        sigterm: _SigtermFlag,
    ):
        self.sae, self.optimizer, self.cfg, self.run_dir, self.state = sae, optimizer, cfg, run_dir, state
        self.validation, self.bar, self.on_step, self.sigterm = validation, bar, on_step, sigterm
        self.names = dict(sae.named_parameters())
        self.device = next(iter(self.names.values())).device
        self.validate_after = set(validation_steps(cfg)) if validation is not None else set()

    def run(self, batches: Iterable[Tensor], start: int) -> dict[str, float]:
        cfg, parts = self.cfg, {}
        data = itertools.islice(batches, start, cfg.steps)
        with open(self.run_dir / LOG_FILE, "a", newline="") as log_file:
            writer = None
            for step in range(start, cfg.steps):
                batch = next(data, None)
                if batch is None:
                    raise ValueError(f"the data ran out after {step} batches; cfg.steps={cfg.steps} needs more")
                parts = _step(self.sae, self.optimizer, self.names, batch.to(self.device, non_blocking=True), step, cfg)
                row = {"step": step + 1, "lr": cfg.lr * lr_factor(step, cfg), **parts}
                if writer is None:
                    writer = csv.DictWriter(log_file, fieldnames=list(row))
                    if log_file.tell() == 0:
                        writer.writeheader()
                writer.writerow(row)
                self.bar.update(1)
                self.bar.set_postfix(loss=f"{parts['loss']:.4g}", l0=f"{parts['l0']:.1f}")
                done = step + 1
                if done in self.validate_after:
                    self.state.validation.append(
                        {"step": done, "fraction": done / cfg.steps, **validation_metrics(self.sae, self.validation)}
                    )
                    self.sae.train()
                stopping = self.sigterm.raised and done < cfg.steps
                if (cfg.checkpoint_every and done % cfg.checkpoint_every == 0) or done == cfg.steps or stopping:
                    log_file.flush()
                    _save_checkpoint(self.run_dir, self.sae, self.optimizer, done, cfg, self.state)
                if stopping:
                    raise TrainingInterrupted(done, self.run_dir)
                if self.on_step is not None:
                    self.on_step(done, parts)
        return parts


def _step(
    sae: SAE, optimizer: torch.optim.Optimizer, names: dict[str, Tensor], batch: Tensor, step: int, cfg: TrainConfig
) -> dict[str, float]:
    """One optimiser step with finiteness checks and gradient-norm clipping; returns the loss parts (with
    ``grad_norm``, the global norm before clipping)."""
    if not torch.is_floating_point(batch):
        raise ValueError(f"step {step + 1}: the batch has dtype {batch.dtype}; a floating-point tensor is needed")
    if not bool(torch.isfinite(batch).all()):
        raise NonFiniteError(f"step {step + 1}: the input batch contains NaN or inf")
    for group in optimizer.param_groups:
        group["lr"] = cfg.lr * lr_factor(step, cfg)
    optimizer.zero_grad(set_to_none=True)
    loss, parts = sae.loss(batch)
    bad = [k for k, v in parts.items() if not math.isfinite(v)]
    if not bool(torch.isfinite(loss)) or bad:
        raise NonFiniteError(f"step {step + 1}: the loss is not finite (non-finite parts: {', '.join(bad) or 'loss'})")
    loss.backward()
    sae.constrain_grads()
    # one pass over the gradients gives both the finiteness check and the norm for clipping: a parameter's
    # norm (float64, no overflow) is finite exactly when its gradient holds no NaN or inf
    with_grad = [(name, p) for name, p in names.items() if p.grad is not None]
    norms = [torch.linalg.vector_norm(p.grad, dtype=torch.float64) for _, p in with_grad]
    norm = torch.linalg.vector_norm(torch.stack(norms)) if norms else None
    if norm is not None and not bool(torch.isfinite(norm)):
        bad = next(name for (name, _), n in zip(with_grad, norms, strict=True) if not bool(torch.isfinite(n)))
        raise NonFiniteError(f"step {step + 1}: the gradient of parameter {bad} contains NaN or inf")
    if norm is not None and cfg.grad_clip > 0:
        torch.nn.utils.clip_grads_with_norm_([p for _, p in with_grad], cfg.grad_clip, norm.float())
    optimizer.step()
    sae.constrain_weights()
    parts["grad_norm"] = float(norm) if norm is not None else 0.0
    return parts


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


# ----- checkpoints ----------------------------------------------------------------------------------
def _find_checkpoint(run_dir: Path) -> Path | None:
    """The complete checkpoint folder of a run, if any (a replaced one left by a crash mid-swap counts)."""
    for name in (CHECKPOINT_DIR, f".{CHECKPOINT_DIR}.old"):
        path = run_dir / name
        if (path / TRAINER_META).is_file():
            return path
    return None


def _save_checkpoint(
    run_dir: Path, sae: SAE, optimizer: torch.optim.Optimizer, step: int, cfg: TrainConfig, state: _RunState
) -> None:
    """Write a complete checkpoint into a temporary folder, then swap it in for ``checkpoint/``."""
    tmp = Path(tempfile.mkdtemp(dir=run_dir, prefix=f".{CHECKPOINT_DIR}.tmp"))
    try:
        sae.save(tmp)
        tensors, moments = {"rng_state": torch.get_rng_state()}, {}
        names = {id(p): n for n, p in sae.named_parameters()}
        for p, opt_state in optimizer.state.items():
            for key, value in opt_state.items():
                tensors[f"adam.{names[id(p)]}.{key}"] = value.detach().contiguous().cpu().clone()
            moments[names[id(p)]] = sorted(opt_state)
        save_file(tensors, str(tmp / TRAINER_WEIGHTS))
        meta = {
            "step": step,
            "adam_state": moments,
            "train_config": _resumable_fields(cfg),
            "state": dataclasses.asdict(state),
            "sha256": {TRAINER_WEIGHTS: file_sha256(tmp / TRAINER_WEIGHTS)},
        }
        (tmp / TRAINER_META).write_text(json.dumps(meta, indent=1))
        final, old = run_dir / CHECKPOINT_DIR, run_dir / f".{CHECKPOINT_DIR}.old"
        if final.exists():  # else ``old`` may be the only complete checkpoint: keep it until ``tmp`` is in place
            if old.exists():
                shutil.rmtree(old)
            os.replace(final, old)
        os.replace(tmp, final)
        shutil.rmtree(old, ignore_errors=True)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _resumable_fields(cfg: TrainConfig) -> dict:
    """The settings a resumed run must share with the interrupted one: all but display and checkpoint
    cadence, and ``steps`` too when there is no decay (a constant-lr run may be extended)."""
    fields = dataclasses.asdict(cfg)
    for name in ("progress", "checkpoint_every") + (("steps",) if cfg.decay == "none" else ()):
        fields.pop(name)
    fields["betas"] = list(fields["betas"])
    fields["validate_at"] = list(fields["validate_at"])
    return fields


def _load_checkpoint(ckpt: Path, sae: SAE, optimizer: torch.optim.Optimizer, cfg: TrainConfig) -> tuple[int, _RunState]:
    """Restore the SAE (weights and kind state), the Adam moments and the RNG; return the step and the run
    state. Refuses a checkpoint made for another SAE config or other training settings, and a damaged one
    (a file whose sha256 differs from the recorded one), naming the file."""
    try:
        meta = json.loads((ckpt / TRAINER_META).read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise ValueError(
            f"corrupt checkpoint file {ckpt / TRAINER_META}: {e}; delete {ckpt} to restart the run from scratch"
        ) from None
    weights = ckpt / TRAINER_WEIGHTS
    expected = meta.get("sha256", {}).get(TRAINER_WEIGHTS)
    if not weights.is_file() or file_sha256(weights) != expected:
        raise ValueError(
            f"corrupt checkpoint file {weights}: missing, or its sha256 differs from the one recorded "
            f"in {ckpt / TRAINER_META}; delete {ckpt} to restart the run from scratch"
        )
    try:
        saved = load(ckpt)
    except ValueError as e:
        raise ValueError(f"{e}; delete {ckpt} to restart the run from scratch") from None
    if saved.kind != sae.kind or saved.cfg != sae.cfg:
        raise ValueError(f"checkpoint {ckpt} was made for {saved.kind} {saved.cfg}, not {sae.kind} {sae.cfg}")
    if meta.get("train_config") != _resumable_fields(cfg):
        raise ValueError(
            f"checkpoint {ckpt} was made with training settings {meta.get('train_config')}, "
            f"not {_resumable_fields(cfg)}: resuming would not continue the same run"
        )
    if int(meta["step"]) > cfg.steps:
        raise ValueError(f"checkpoint {ckpt} is at step {meta['step']}, beyond cfg.steps={cfg.steps}")
    sae.load_state_dict(saved.state_dict())
    tensors = load_file(str(weights))
    torch.set_rng_state(tensors["rng_state"])
    device = next(sae.parameters()).device
    params = list(sae.named_parameters())
    state = {
        i: {key: tensors[f"adam.{name}.{key}"].to(device) for key in meta["adam_state"][name]}
        for i, (name, _) in enumerate(params)
        if name in meta["adam_state"]
    }
    optimizer.load_state_dict({"state": state, "param_groups": optimizer.state_dict()["param_groups"]})
    return int(meta["step"]), _RunState(**meta["state"])


def _remove_stale_temporaries(run_dir: Path) -> None:
    """Delete temporary files and folders that a killed run may have left while writing."""
    for pattern in (f".{CHECKPOINT_DIR}.tmp*", f".{FINAL_DIR}.tmp*", f".{LOG_FILE}.*.tmp", f".{SUMMARY_FILE}.*.tmp"):
        for path in run_dir.glob(pattern):
            shutil.rmtree(path) if path.is_dir() else path.unlink()


def _last_logged_parts(path: Path) -> dict[str, float]:
    """The loss parts of the last row of ``log.csv`` (for a resumed run that had already finished)."""
    with open(path, newline="") as f:
        rows = list(csv.DictReader(f))
    return {k: float(v) for k, v in rows[-1].items() if k not in ("step", "lr")} if rows else {}


def _truncate_log(path: Path, step: int) -> None:
    """Keep the header and the rows of steps <= ``step`` (rows after the checkpoint are redone)."""
    if not path.exists():
        return
    if step == 0:
        path.unlink()
        return
    with open(path, newline="") as f:
        rows = list(csv.reader(f))
    # A row cut short by a kill (fewer fields than the header) may hold a truncated step number: drop it.
    kept = rows[:1] + [r for r in rows[1:] if len(r) == len(rows[0]) and int(r[0]) <= step]

    def write(tmp: str) -> None:
        with open(tmp, "w", newline="") as f:
            csv.writer(f).writerows(kept)

    atomic_write(path, write)


def _publish_final(
    run_dir: Path,
    sae: SAE,
    cfg: TrainConfig,
    parts: dict[str, float],
    seconds: float,
    data: dict | None = None,
    resumed_from: int = 0,
    record: dict | None = None,
) -> Path:
    """Write the final SAE folder and ``train.json`` (atomically, after everything else succeeded);
    ``resumed_from`` is the checkpoint step this session started from (0: a fresh run); ``record`` the
    training record (:func:`training_record`)."""
    final = run_dir / FINAL_DIR
    tmp = Path(tempfile.mkdtemp(dir=run_dir, prefix=f".{FINAL_DIR}.tmp"))
    try:
        sae.save(tmp)
        if final.exists():
            shutil.rmtree(final)
        os.replace(tmp, final)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    summary = {
        "kind": sae.kind,
        "sae_config": dataclasses.asdict(sae.cfg),
        "train_config": dataclasses.asdict(cfg),
        "last_step": parts,
        "seconds_this_session": seconds,
        "resumed_from_step": resumed_from,
        "training": record or {},
        "data": data,
        "provenance": provenance(),
    }
    run_record.write(run_dir, summary)
    return final
