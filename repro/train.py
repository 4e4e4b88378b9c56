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

The pieces: the settings and the lr schedule in :mod:`repro.train_config`, one optimiser step in
:mod:`repro.train_step`, validation and the convergence record in :mod:`repro.train_record`, the run folder's
files in :mod:`repro.train_files`; the loop, the checkpoints and resumption are here.
"""

from __future__ import annotations

import csv
import dataclasses
import itertools
import json
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

from repro.sae.base import SAE, file_sha256, load
from repro.train_config import TrainConfig, dead_window_for, lr_factor
from repro.train_files import (
    CHECKPOINT_DIR,
    LOG_FILE,
    _last_logged_parts,
    _publish_final,
    _remove_stale_temporaries,
    _truncate_log,
)
from repro.train_record import (
    CONVERGED_RTOL,
    _RunState,
    convergence,
    convergence_window,
    training_record,
    validation_metrics,
    validation_steps,
)
from repro.train_step import NonFiniteError, _step, _training_sample

__all__ = [
    "CONVERGED_RTOL",
    "NonFiniteError",
    "TrainConfig",
    "TrainResult",
    "TrainingInterrupted",
    "convergence",
    "convergence_window",
    "dead_window_for",
    "lr_factor",
    "train",
    "validation_metrics",
    "validation_steps",
]

TRAINER_WEIGHTS = "trainer.safetensors"
TRAINER_META = "trainer.json"


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
