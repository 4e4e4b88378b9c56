"""The one trainer for every SAE kind.

Adam with linear warm-up and optional decay, on batches from any iterable of ``(..., d_in)`` tensors.
The run folder holds:

- ``checkpoint/``: the latest checkpoint (``sae.safetensors`` + ``cfg.json`` with the kind's state,
  ``trainer.safetensors`` with the optimiser moments and the RNG state, ``trainer.json`` with the step),
  replaced atomically every ``checkpoint_every`` steps and at the end;
- ``log.csv``: one row per step (loss parts, L0, dead fraction, lr);
- ``sae/``: the final SAE, and ``train.json``: summary and provenance, both written only when the run
  completes.

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

from repro.files import atomic_write
from repro.provenance import provenance
from repro.sae.base import SAE, load

CHECKPOINT_DIR = "checkpoint"
FINAL_DIR = "sae"
LOG_FILE = "log.csv"
SUMMARY_FILE = "train.json"


class NonFiniteError(FloatingPointError):
    """A NaN or inf in a batch, the loss or a gradient; the message names the step and the tensor."""


class TrainingInterrupted(Exception):
    """SIGTERM arrived during training; a checkpoint was written at ``step``."""

    def __init__(self, step: int, run_dir: Path):
        super().__init__(f"interrupted by SIGTERM after step {step}; checkpoint written in {run_dir}: "
                         "continue with --resume")
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
    the last step. seed: seeds torch's global RNG at the start. checkpoint_every: steps between
    checkpoints (0 = only at the end). progress: show a tqdm bar."""

    steps: int
    lr: float = 4e-4
    betas: tuple[float, float] = (0.9, 0.999)
    eps: float = 1e-8
    warmup_steps: int = 500
    decay: str = "none"
    decay_start: float = 0.8
    min_lr_ratio: float = 0.0
    seed: int = 0
    checkpoint_every: int = 0
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
            ("betas", isinstance(self.betas, (tuple, list)) and len(self.betas) == 2
             and all(is_num(b) and 0 <= b < 1 for b in self.betas), "two numbers in [0, 1)"),
            ("eps", is_num(self.eps) and self.eps > 0, "a number > 0"),
            ("warmup_steps", is_int(self.warmup_steps) and self.warmup_steps >= 0, "an integer >= 0"),
            ("decay", self.decay in ("none", "linear", "cosine"), "'none', 'linear' or 'cosine'"),
            ("decay_start", is_num(self.decay_start) and 0 <= self.decay_start <= 1, "a number in [0, 1]"),
            ("min_lr_ratio", is_num(self.min_lr_ratio) and 0 <= self.min_lr_ratio <= 1, "a number in [0, 1]"),
            ("seed", is_int(self.seed), "an integer"),
            ("checkpoint_every", is_int(self.checkpoint_every) and self.checkpoint_every >= 0, "an integer >= 0"),
        ]
        for name, ok, expected in checks:
            if not ok:
                raise ValueError(f"invalid training setting {name}={getattr(self, name)!r}: expected {expected}")


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
    """What a finished run returns: steps done, the last step's loss parts, paths, wall time (s)."""

    steps: int
    last_parts: dict[str, float]
    run_dir: Path
    sae_dir: Path
    seconds: float


def train(sae: SAE, batches: Iterable[Tensor], cfg: TrainConfig, run_dir: str | os.PathLike, *,
          resume: bool = False, on_step: Callable[[int, dict[str, float]], None] | None = None,
          data: dict | None = None) -> TrainResult:
    """Train ``sae`` in place for ``cfg.steps`` steps on ``batches``; see the module docstring.

    ``on_step(step, parts)`` is called after each step (1-based) once its checkpoint, if any, is
    written. ``data`` (JSON-serialisable, e.g. the activation cache's path and spec) is recorded in
    ``train.json`` under "data", so that evaluations can find the backbone, hook and dataset. A run
    folder that already holds a checkpoint is refused unless ``resume`` is set.
    """
    cfg.validate()
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    ckpt = _find_checkpoint(run_dir)
    if ckpt is not None and not resume:
        raise FileExistsError(f"{run_dir} already holds a checkpoint: pass resume=True to continue it, "
                              "or use an empty run folder")
    _remove_stale_temporaries(run_dir)
    torch.manual_seed(cfg.seed)
    optimizer = torch.optim.Adam(sae.parameters(), lr=cfg.lr, betas=cfg.betas, eps=cfg.eps)
    start = 0
    if ckpt is not None:
        start = _load_checkpoint(ckpt, sae, optimizer, cfg)
    _truncate_log(run_dir / LOG_FILE, start)
    sae.train()
    began = time.perf_counter()
    parts = _last_logged_parts(run_dir / LOG_FILE) if start == cfg.steps else {}
    bar = tqdm(total=cfg.steps, initial=start, disable=not cfg.progress, desc=f"train {sae.kind}", unit="step")
    # Some CPU kernels (scatter/index accumulation) sum in a thread-dependent order unless asked not to:
    # without this flag, BatchTopK runs with 2 threads diverged after ~10 steps.
    was_deterministic = torch.are_deterministic_algorithms_enabled()
    was_warn_only = torch.is_deterministic_algorithms_warn_only_enabled()
    torch.use_deterministic_algorithms(True, warn_only=True)
    try:
        with _SigtermFlag() as sigterm:
            parts = _loop(sae, optimizer, batches, cfg, run_dir, start, bar, on_step, sigterm) or parts
    finally:
        torch.use_deterministic_algorithms(was_deterministic, warn_only=was_warn_only)
        bar.close()
    seconds = time.perf_counter() - began
    sae_dir = _publish_final(run_dir, sae, cfg, parts, seconds, data, resumed_from=start)
    return TrainResult(cfg.steps, parts, run_dir, sae_dir, seconds)


def _loop(sae: SAE, optimizer: torch.optim.Optimizer, batches: Iterable[Tensor], cfg: TrainConfig, run_dir: Path,
          start: int, bar: tqdm, on_step: Callable[[int, dict[str, float]], None] | None,
          sigterm: _SigtermFlag) -> dict[str, float]:
    """Steps ``start`` .. ``cfg.steps - 1``: log, checkpoint, callback; returns the last loss parts. After
    a SIGTERM (``sigterm.raised``) it checkpoints the step just done and raises TrainingInterrupted."""
    names = dict(sae.named_parameters())
    device = next(iter(names.values())).device
    parts: dict[str, float] = {}
    data = itertools.islice(iter(batches), start, cfg.steps)
    with open(run_dir / LOG_FILE, "a", newline="") as log_file:
        writer = None
        for step in range(start, cfg.steps):
            batch = next(data, None)
            if batch is None:
                raise ValueError(f"the data ran out after {step} batches; cfg.steps={cfg.steps} needs more")
            parts = _step(sae, optimizer, names, batch.to(device, non_blocking=True), step, cfg)
            row = {"step": step + 1, "lr": cfg.lr * lr_factor(step, cfg), **parts}
            if writer is None:
                writer = csv.DictWriter(log_file, fieldnames=list(row))
                if log_file.tell() == 0:
                    writer.writeheader()
            writer.writerow(row)
            bar.update(1)
            bar.set_postfix(loss=f"{parts['loss']:.4g}", l0=f"{parts['l0']:.1f}")
            done = step + 1
            stopping = sigterm.raised and done < cfg.steps
            if (cfg.checkpoint_every and done % cfg.checkpoint_every == 0) or done == cfg.steps or stopping:
                log_file.flush()
                _save_checkpoint(run_dir, sae, optimizer, done, cfg)
            if stopping:
                raise TrainingInterrupted(done, run_dir)
            if on_step is not None:
                on_step(done, parts)
    return parts


def _step(sae: SAE, optimizer: torch.optim.Optimizer, names: dict[str, Tensor], batch: Tensor, step: int,
          cfg: TrainConfig) -> dict[str, float]:
    """One optimiser step with finiteness checks; returns the loss parts."""
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
    for name, p in names.items():
        if p.grad is not None and not bool(torch.isfinite(p.grad).all()):
            raise NonFiniteError(f"step {step + 1}: the gradient of parameter {name} contains NaN or inf")
    sae.constrain_grads()
    optimizer.step()
    sae.constrain_weights()
    return parts


# ----- checkpoints ----------------------------------------------------------------------------------
def _find_checkpoint(run_dir: Path) -> Path | None:
    """The complete checkpoint folder of a run, if any (a replaced one left by a crash mid-swap counts)."""
    for name in (CHECKPOINT_DIR, f".{CHECKPOINT_DIR}.old"):
        path = run_dir / name
        if (path / "trainer.json").is_file():
            return path
    return None


def _save_checkpoint(run_dir: Path, sae: SAE, optimizer: torch.optim.Optimizer, step: int, cfg: TrainConfig) -> None:
    """Write a complete checkpoint into a temporary folder, then swap it in for ``checkpoint/``."""
    tmp = Path(tempfile.mkdtemp(dir=run_dir, prefix=f".{CHECKPOINT_DIR}.tmp"))
    try:
        sae.save(tmp)
        tensors, moments = {"rng_state": torch.get_rng_state()}, {}
        names = {id(p): n for n, p in sae.named_parameters()}
        for p, state in optimizer.state.items():
            for key, value in state.items():
                tensors[f"adam.{names[id(p)]}.{key}"] = value.detach().contiguous().clone()
            moments[names[id(p)]] = sorted(state)
        save_file(tensors, str(tmp / "trainer.safetensors"))
        meta = {"step": step, "adam_state": moments, "train_config": _resumable_fields(cfg)}
        (tmp / "trainer.json").write_text(json.dumps(meta, indent=1))
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
    return fields


def _load_checkpoint(ckpt: Path, sae: SAE, optimizer: torch.optim.Optimizer, cfg: TrainConfig) -> int:
    """Restore the SAE (weights and kind state), the Adam moments and the RNG; return the step.
    Refuses a checkpoint made for another SAE config or other training settings."""
    saved = load(ckpt)
    if saved.kind != sae.kind or saved.cfg != sae.cfg:
        raise ValueError(f"checkpoint {ckpt} was made for {saved.kind} {saved.cfg}, not {sae.kind} {sae.cfg}")
    meta = json.loads((ckpt / "trainer.json").read_text())
    if meta.get("train_config") != _resumable_fields(cfg):
        raise ValueError(f"checkpoint {ckpt} was made with training settings {meta.get('train_config')}, "
                         f"not {_resumable_fields(cfg)}: resuming would not continue the same run")
    if int(meta["step"]) > cfg.steps:
        raise ValueError(f"checkpoint {ckpt} is at step {meta['step']}, beyond cfg.steps={cfg.steps}")
    sae.load_state_dict(saved.state_dict())
    tensors = load_file(str(ckpt / "trainer.safetensors"))
    torch.set_rng_state(tensors["rng_state"])
    params = list(sae.named_parameters())
    state = {i: {key: tensors[f"adam.{name}.{key}"] for key in meta["adam_state"][name]}
             for i, (name, _) in enumerate(params) if name in meta["adam_state"]}
    optimizer.load_state_dict({"state": state, "param_groups": optimizer.state_dict()["param_groups"]})
    return int(meta["step"])


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


def _publish_final(run_dir: Path, sae: SAE, cfg: TrainConfig, parts: dict[str, float], seconds: float,
                   data: dict | None = None, resumed_from: int = 0) -> Path:
    """Write the final SAE folder and ``train.json`` (atomically, after everything else succeeded);
    ``resumed_from`` is the checkpoint step this session started from (0: a fresh run)."""
    final = run_dir / FINAL_DIR
    tmp = Path(tempfile.mkdtemp(dir=run_dir, prefix=f".{FINAL_DIR}.tmp"))
    try:
        sae.save(tmp)
        if final.exists():
            shutil.rmtree(final)
        os.replace(tmp, final)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    summary = {"kind": sae.kind, "sae_config": dataclasses.asdict(sae.cfg), "train_config": dataclasses.asdict(cfg),
               "last_step": parts, "seconds_this_session": seconds, "resumed_from_step": resumed_from,
               "data": data, "provenance": provenance()}
    atomic_write(run_dir / SUMMARY_FILE, lambda p: Path(p).write_text(json.dumps(summary, indent=2)))
    return final
