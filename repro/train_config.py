"""The trainer's settings, :class:`TrainConfig` (checked by :meth:`TrainConfig.validate`), and the schedules
they set: the lr factor of each step (:func:`lr_factor`: linear warm-up, then a linear or cosine decay) and
the dead-latent window scaled to the run (:func:`dead_window_for`). Used by :mod:`repro.train`."""

from __future__ import annotations

import math
from dataclasses import dataclass

from repro.sae.base import DEFAULT_DEAD_WINDOW


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
