"""Tests of the trainer (repro/train.py): determinism, bit-identical resume (also after a real SIGKILL
and from a checkpoint left mid-swap), refusal to overwrite, non-finite detection without partial
output, the per-step log and the lr schedule, decoder-norm constraints, final outputs and config
validation. CPU only, tiny sizes."""

from __future__ import annotations

import csv
import dataclasses
import itertools
import json
import math
import os
import re
import shutil
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

import repro.train as train_mod
from repro.sae import KINDS, create, load
from repro.synthetic import PlantedFeatures
from repro.train import NonFiniteError, TrainConfig, TrainingInterrupted, lr_factor, train

D_IN, D_SAE, BATCH = 16, 64, 64
N = 6  # checkpoint interval; runs are 2N steps
DATA = PlantedFeatures(d_in=D_IN, n_features=32, mean_active=3.0, noise=0.01, seed=0)
DATA_SEED = 1

# Hyperparameters valid at tiny sizes; dead_window=256 tokens = 4 batches, so dead-latent bookkeeping
# (and AuxK for topk/batchtopk) actually triggers within a run.
BASE_HP = {"dead_window": 256}
KIND_HP = {"topk": {"k": 4}, "batchtopk": {"k": 4}}
# Every kind with its defaults, plus the forced sparse / official code paths.
CASES = [(kind, {}) for kind in KINDS] + [
    ("topk", {"decode": "sparse"}),
    ("batchtopk", {"decode": "sparse"}),
    ("sparsemax_attention", {"impl": "official"}),
    ("sparsemax_attention", {"decode": "sparse"}),
]
CASE_IDS = [kind + "".join(f"-{k}={v}" for k, v in extra.items()) for kind, extra in CASES]


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    """Tiny tensors: one intra-op thread is fastest and immune to OpenMP oversubscription on a busy
    machine; the SIGKILL test's child process uses the same count so that results compare bit for bit."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def hparams(kind: str, **extra) -> dict:
    return {**BASE_HP, **KIND_HP.get(kind, {}), **extra}


def make_sae(kind: str, d_sae: int = D_SAE, **extra):
    return create(kind, D_IN, d_sae, **hparams(kind, **extra))


def batches(seed: int = DATA_SEED):
    return DATA.batches(BATCH, seed=seed)


def config(**over) -> TrainConfig:
    base = {
        "steps": 2 * N,
        "lr": 1e-3,
        "warmup_steps": 3,
        "decay": "cosine",
        "decay_start": 0.5,
        "min_lr_ratio": 0.1,
        "checkpoint_every": N,
        "progress": False,
        "seed": 0,
    }
    return TrainConfig(**{**base, **over})


class Stop(Exception):
    """Raised by on_step to interrupt a run."""


def stop_after(step: int):
    def on_step(done: int, parts: dict) -> None:
        if done == step:
            raise Stop(done)

    return on_step


def assert_state_equal(a: dict, b: dict) -> None:
    assert a.keys() == b.keys()
    for name in a:
        assert a[name].dtype == b[name].dtype, name
        assert a[name].shape == b[name].shape, name
        assert torch.equal(a[name], b[name]), f"{name} differs"


def read_log(run: Path) -> tuple[list[str], list[list[str]]]:
    with open(run / "log.csv", newline="") as f:
        rows = list(csv.reader(f))
    return rows[0], rows[1:]


def log_dicts(run: Path) -> list[dict[str, str]]:
    with open(run / "log.csv", newline="") as f:
        return list(csv.DictReader(f))


def hidden_entries(run: Path) -> list[str]:
    return sorted(p.name for p in run.iterdir() if p.name.startswith("."))


def trainer_state(ckpt: Path) -> tuple[dict, dict]:
    return load_file(str(ckpt / "trainer.safetensors")), json.loads((ckpt / "trainer.json").read_text())


def assert_same_run(run_a: Path, run_b: Path, sae_a, sae_b) -> None:
    """Weights, buffers, Adam moments, RNG, checkpoint step, final folder and log: bit for bit."""
    assert_state_equal(sae_a.state_dict(), sae_b.state_dict())
    tensors_a, meta_a = trainer_state(run_a / "checkpoint")
    tensors_b, meta_b = trainer_state(run_b / "checkpoint")
    assert meta_a == meta_b
    assert meta_a["step"] == 2 * N
    assert any(k.endswith(".exp_avg") for k in tensors_a) and any(k.endswith(".exp_avg_sq") for k in tensors_a)
    assert_state_equal(tensors_a, tensors_b)
    assert_state_equal(load(run_a / "sae").state_dict(), load(run_b / "sae").state_dict())
    header_b, rows_b = read_log(run_b)
    assert [int(r[0]) for r in rows_b] == list(range(1, 2 * N + 1))
    # No wall-clock columns: the logs are identical text.
    assert (run_a / "log.csv").read_text() == (run_b / "log.csv").read_text()
    assert (run_b / "train.json").is_file()
    assert hidden_entries(run_b) == []


def reference_run(tmp_path: Path, kind: str, extra: dict, **cfg_over):
    sae = make_sae(kind, **extra)
    run = tmp_path / "a"
    train(sae, batches(), config(**cfg_over), run)
    return run, sae


# ----- 1. determinism -------------------------------------------------------------------------------
@pytest.mark.parametrize(("kind", "extra"), CASES, ids=CASE_IDS)
def test_same_seeds_give_bit_identical_runs(tmp_path, kind, extra):
    init = {k: v.clone() for k, v in make_sae(kind, **extra).state_dict().items()}
    saes = []
    for name in ("x", "y"):
        sae = make_sae(kind, **extra)
        train(sae, batches(), config(), tmp_path / name)
        saes.append(sae)
    assert_state_equal(saes[0].state_dict(), saes[1].state_dict())
    assert (tmp_path / "x" / "log.csv").read_text() == (tmp_path / "y" / "log.csv").read_text()
    # Training really changed the parameters (the equality above is not vacuous).
    params = dict(saes[0].named_parameters())
    assert any(not torch.equal(params[n].detach(), init[n]) for n in params)


def test_different_data_seed_gives_different_weights(tmp_path):
    a, b = make_sae("topk"), make_sae("topk")
    train(a, batches(1), config(), tmp_path / "a")
    train(b, batches(2), config(), tmp_path / "b")
    assert not torch.equal(a.W_enc, b.W_enc)


@pytest.mark.parametrize("kind", ["topk", "batchtopk"])
def test_latents_die_and_auxk_triggers(tmp_path, kind):
    """Far more latents than features: many die within dead_window=256 tokens, the logged dead fraction
    becomes positive and AuxK becomes active."""
    sae = make_sae(kind, d_sae=256)
    train(
        sae,
        PlantedFeatures(d_in=D_IN, n_features=8, mean_active=2.0).batches(BATCH, seed=3),
        config(steps=20, checkpoint_every=0),
        tmp_path,
    )
    rows = log_dicts(tmp_path)
    dead = [float(r["dead_fraction"]) for r in rows]
    auxk = [float(r["auxk"]) for r in rows]
    assert dead[0] == 0.0 and auxk[0] == 0.0  # nothing can be dead before 256 tokens
    assert max(dead) > 0.1
    assert max(auxk) > 0.0
    # The logged dead fraction is the share of latents silent for dead_window tokens.
    assert dead[-1] == float((sae.tokens_since_fired >= 256).double().mean())
    # AuxK is zero exactly when nothing is dead (logged dead fraction is after this step's update).
    assert all(a == 0.0 for a, d_prev in zip(auxk[1:], dead[:-1], strict=True) if d_prev == 0.0)


# ----- 2. resume after an exception -----------------------------------------------------------------
@pytest.mark.parametrize(("kind", "extra"), CASES, ids=CASE_IDS)
def test_resume_is_bit_identical(tmp_path, kind, extra):
    run_a, sae_a = reference_run(tmp_path, kind, extra)
    run_b = tmp_path / "b"
    first = make_sae(kind, **extra)
    with pytest.raises(Stop):
        train(first, batches(), config(), run_b, on_step=stop_after(N))
    assert trainer_state(run_b / "checkpoint")[1]["step"] == N
    assert not (run_b / "sae").exists() and not (run_b / "train.json").exists()
    assert [int(r[0]) for r in read_log(run_b)[1]] == list(range(1, N + 1))

    steps_seen = []
    sae_b = make_sae(kind, **extra)
    result = train(sae_b, batches(), config(), run_b, resume=True, on_step=lambda s, p: steps_seen.append(s))
    assert steps_seen == list(range(N + 1, 2 * N + 1))
    assert result.steps == 2 * N
    assert_same_run(run_a, run_b, sae_a, sae_b)
    assert json.loads((run_b / "train.json").read_text())["resumed_from_step"] == N
    assert json.loads((run_a / "train.json").read_text())["resumed_from_step"] == 0


def test_sigterm_checkpoints_the_step_just_done_and_resume_is_bit_identical(tmp_path):
    """What a batch scheduler sends before SIGKILL (scancel, preemption, time limit): no step is lost."""
    run_a, sae_a = reference_run(tmp_path, "topk", {})
    run_b = tmp_path / "b"
    previous = signal.getsignal(signal.SIGTERM)

    def terminate_after_3(done: int, parts: dict) -> None:
        if done == 3:
            os.kill(os.getpid(), signal.SIGTERM)

    with pytest.raises(TrainingInterrupted) as stopped:
        train(make_sae("topk"), batches(), config(), run_b, on_step=terminate_after_3)
    assert stopped.value.step == 4 and 4 % N != 0  # the step in progress ends; 4 is not a regular checkpoint
    assert trainer_state(run_b / "checkpoint")[1]["step"] == 4
    assert signal.getsignal(signal.SIGTERM) is previous
    sae_b = make_sae("topk")
    train(sae_b, batches(), config(), run_b, resume=True)
    assert_same_run(run_a, run_b, sae_a, sae_b)
    assert json.loads((run_b / "train.json").read_text())["resumed_from_step"] == 4


def test_resume_redoes_steps_after_the_checkpoint(tmp_path):
    """Interrupted 3 steps after the checkpoint: those log rows are dropped and the steps redone."""
    run_a, sae_a = reference_run(tmp_path, "topk", {})
    run_b = tmp_path / "b"
    with pytest.raises(Stop):
        train(make_sae("topk"), batches(), config(), run_b, on_step=stop_after(N + 3))
    assert [int(r[0]) for r in read_log(run_b)[1]] == list(range(1, N + 4))
    assert trainer_state(run_b / "checkpoint")[1]["step"] == N
    sae_b = make_sae("topk")
    train(sae_b, batches(), config(), run_b, resume=True)
    assert_same_run(run_a, run_b, sae_a, sae_b)


def test_resume_drops_a_partially_written_log_row(tmp_path):
    """A kill while the log buffer was being flushed can leave rows past the checkpoint and a truncated
    last row, e.g. '1' of '10,...'; neither may survive the resume (the '1' is not a row of step 1)."""
    run_a, sae_a = reference_run(tmp_path, "relu", {})
    run_b = tmp_path / "b"
    with pytest.raises(Stop):
        train(make_sae("relu"), batches(), config(), run_b, on_step=stop_after(N))
    lines_a = (run_a / "log.csv").read_text().splitlines(keepends=True)
    assert lines_a[10].startswith("10,")
    with open(run_b / "log.csv", "a", newline="") as f:
        f.write("".join(lines_a[N + 1 : 10]) + "1")  # rows N+1..9 complete, row 10 cut after its first digit
    sae_b = make_sae("relu")
    train(sae_b, batches(), config(), run_b, resume=True)
    assert_same_run(run_a, run_b, sae_a, sae_b)


def noisy(sae):
    """Wrap ``sae.loss`` to add input noise from torch's global RNG (which the trainer seeds and checkpoints)."""
    real_loss = sae.loss
    sae.loss = lambda x: real_loss(x + 0.05 * torch.randn_like(x))
    return sae


def test_resume_restores_the_global_rng(tmp_path):
    sae_a = noisy(make_sae("relu"))
    train(sae_a, batches(), config(), tmp_path / "a")
    other_seed = noisy(make_sae("relu"))
    train(other_seed, batches(), config(seed=1), tmp_path / "s")
    assert not torch.equal(sae_a.W_enc, other_seed.W_enc)  # cfg.seed seeds the global RNG
    run_b = tmp_path / "b"
    with pytest.raises(Stop):
        train(noisy(make_sae("relu")), batches(), config(), run_b, on_step=stop_after(N))
    torch.rand(1000)  # whatever happens between the runs must not matter
    sae_b = noisy(make_sae("relu"))
    train(sae_b, batches(), config(), run_b, resume=True)
    assert_same_run(tmp_path / "a", run_b, sae_a, sae_b)


def test_resume_checks_the_sae_config(tmp_path):
    with pytest.raises(Stop):
        train(make_sae("topk"), batches(), config(), tmp_path, on_step=stop_after(N))
    with pytest.raises(ValueError, match="checkpoint"):
        train(create("topk", D_IN, D_SAE, **hparams("topk", k=5)), batches(), config(), tmp_path, resume=True)


# ----- 3. resume after SIGKILL ----------------------------------------------------------------------
CHILD = textwrap.dedent("""
    import sys, time
    from pathlib import Path
    import torch
    torch.set_num_threads(1)
    from repro.sae import create
    from repro.synthetic import PlantedFeatures
    from repro.train import TrainConfig, train

    run, marker, n, hp, cfg = sys.argv[1], Path(sys.argv[2]), int(sys.argv[3]), eval(sys.argv[4]), eval(sys.argv[5])
    data = PlantedFeatures(d_in=16, n_features=32, mean_active=3.0, noise=0.01, seed=0)

    def on_step(done, parts):
        if done == n + 2:  # two steps past the checkpoint at n, whose work is lost by the kill
            marker.write_text(str(done))
            time.sleep(300)

    train(create("topk", 16, 64, **hp), data.batches(64, seed=1), TrainConfig(**cfg), run, on_step=on_step)
""")


def test_resume_after_sigkill_is_bit_identical(tmp_path):
    run_a, sae_a = reference_run(tmp_path, "topk", {})
    run_b, marker = tmp_path / "b", tmp_path / "marker"
    cfg = dataclasses.asdict(config())
    proc = subprocess.Popen(
        [sys.executable, "-c", CHILD, str(run_b), str(marker), str(N), repr(hparams("topk")), repr(cfg)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    try:
        deadline = time.monotonic() + 60
        while not marker.exists():
            if proc.poll() is not None:
                pytest.fail(f"the child exited early ({proc.returncode}): {proc.stderr.read().decode()}")
            if time.monotonic() > deadline:
                pytest.fail("the child did not reach the checkpoint within 60 s")
            time.sleep(0.05)
        assert marker.read_text() == str(N + 2)
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.communicate(timeout=30)
    assert proc.returncode == -signal.SIGKILL
    assert trainer_state(run_b / "checkpoint")[1]["step"] == N
    assert not (run_b / "sae").exists()

    sae_b = make_sae("topk")
    with pytest.raises(FileExistsError):
        train(sae_b, batches(), config(), run_b)
    train(sae_b, batches(), config(), run_b, resume=True)
    assert_same_run(run_a, run_b, sae_a, sae_b)


# ----- 4. checkpoint left mid-swap ------------------------------------------------------------------
@pytest.mark.parametrize("kind", ["topk", "batchtopk", "sparsemax_attention"])
def test_resume_from_old_checkpoint_left_mid_swap(tmp_path, kind):
    run_a, sae_a = reference_run(tmp_path, kind, {})
    run_b = tmp_path / "b"
    with pytest.raises(Stop):
        train(make_sae(kind), batches(), config(), run_b, on_step=stop_after(N))
    os.replace(run_b / "checkpoint", run_b / ".checkpoint.old")  # crash between the two renames
    with pytest.raises(FileExistsError):
        train(make_sae(kind), batches(), config(), run_b)
    steps_seen = []
    sae_b = make_sae(kind)
    train(sae_b, batches(), config(), run_b, resume=True, on_step=lambda s, p: steps_seen.append(s))
    assert steps_seen[0] == N + 1
    assert_same_run(run_a, run_b, sae_a, sae_b)
    assert not (run_b / ".checkpoint.old").exists()


def test_newer_checkpoint_wins_over_stale_old(tmp_path):
    """checkpoint/ (step 2c) and a stale .checkpoint.old (step c) left by a crash after the swap:
    resume continues from checkpoint/."""
    c = 4
    cfg = config(steps=3 * c, checkpoint_every=c)
    run_a = tmp_path / "a"
    sae_a = make_sae("topk")
    train(sae_a, batches(), cfg, run_a)
    run_b = tmp_path / "b"
    with pytest.raises(Stop):
        train(make_sae("topk"), batches(), cfg, run_b, on_step=stop_after(c))
    shutil.copytree(run_b / "checkpoint", tmp_path / "ckpt_c")
    with pytest.raises(Stop):
        train(make_sae("topk"), batches(), cfg, run_b, resume=True, on_step=stop_after(2 * c))
    shutil.copytree(tmp_path / "ckpt_c", run_b / ".checkpoint.old")
    steps_seen = []
    sae_b = make_sae("topk")
    train(sae_b, batches(), cfg, run_b, resume=True, on_step=lambda s, p: steps_seen.append(s))
    assert steps_seen == list(range(2 * c + 1, 3 * c + 1))
    assert_state_equal(sae_a.state_dict(), sae_b.state_dict())
    assert (run_a / "log.csv").read_text() == (run_b / "log.csv").read_text()
    assert hidden_entries(run_b) == []


def test_failed_swap_from_old_checkpoint_keeps_a_checkpoint(tmp_path, monkeypatch):
    """Resuming from .checkpoint.old (no checkpoint/), the next save fails at the final rename: the old
    checkpoint must still be there (it may only be deleted once its replacement is in place)."""
    run_a, sae_a = reference_run(tmp_path, "topk", {})
    run_b = tmp_path / "b"
    with pytest.raises(Stop):
        train(make_sae("topk"), batches(), config(), run_b, on_step=stop_after(N))
    os.replace(run_b / "checkpoint", run_b / ".checkpoint.old")
    real_replace = os.replace

    def failing_replace(src, dst, *args, **kwargs):
        if Path(src).name.startswith(".checkpoint.tmp"):
            raise OSError("simulated crash before the new checkpoint is in place")
        return real_replace(src, dst, *args, **kwargs)

    monkeypatch.setattr(os, "replace", failing_replace)
    with pytest.raises(OSError, match="simulated crash"):
        train(make_sae("topk"), batches(), config(), run_b, resume=True)
    monkeypatch.setattr(os, "replace", real_replace)
    found = train_mod._find_checkpoint(run_b)
    assert found is not None, "no checkpoint left after a failed save"
    assert trainer_state(found)[1]["step"] == N
    assert [n for n in hidden_entries(run_b) if n != ".checkpoint.old"] == []
    steps_seen = []
    sae_b = make_sae("topk")
    train(sae_b, batches(), config(), run_b, resume=True, on_step=lambda s, p: steps_seen.append(s))
    assert steps_seen[0] == N + 1
    assert_same_run(run_a, run_b, sae_a, sae_b)


def test_failed_checkpoint_write_keeps_previous_checkpoint(tmp_path, monkeypatch):
    run_a, sae_a = reference_run(tmp_path, "jumprelu", {})
    run_b = tmp_path / "b"
    calls = itertools.count()
    real_save_file = train_mod.save_file

    def failing_save_file(tensors, path, *args, **kwargs):
        if next(calls) == 1:  # the second checkpoint (step 2N)
            raise OSError("disk full")
        return real_save_file(tensors, path, *args, **kwargs)

    monkeypatch.setattr(train_mod, "save_file", failing_save_file)
    with pytest.raises(OSError, match="disk full"):
        train(make_sae("jumprelu"), batches(), config(), run_b)
    monkeypatch.setattr(train_mod, "save_file", real_save_file)
    assert trainer_state(run_b / "checkpoint")[1]["step"] == N
    assert hidden_entries(run_b) == []
    assert not (run_b / "sae").exists() and not (run_b / "train.json").exists()
    sae_b = make_sae("jumprelu")
    train(sae_b, batches(), config(), run_b, resume=True)
    assert_same_run(run_a, run_b, sae_a, sae_b)


# ----- 5. refusing to overwrite; resume in an empty folder -------------------------------------------
def test_refuses_folder_with_checkpoint_without_resume(tmp_path):
    train(make_sae("relu"), batches(), config(), tmp_path)
    before = {p.name: p.stat().st_mtime_ns for p in tmp_path.rglob("*")}
    with pytest.raises(FileExistsError, match="resume"):
        train(make_sae("relu"), batches(), config(), tmp_path)
    assert {p.name: p.stat().st_mtime_ns for p in tmp_path.rglob("*")} == before


def test_resume_in_empty_folder_starts_from_scratch(tmp_path):
    fresh = make_sae("batchtopk")
    train(fresh, batches(), config(), tmp_path / "fresh")
    resumed = make_sae("batchtopk")
    steps_seen = []
    train(
        resumed, batches(), config(), tmp_path / "new" / "run", resume=True, on_step=lambda s, p: steps_seen.append(s)
    )
    assert steps_seen == list(range(1, 2 * N + 1))
    assert_state_equal(fresh.state_dict(), resumed.state_dict())
    assert (tmp_path / "fresh" / "log.csv").read_text() == (tmp_path / "new" / "run" / "log.csv").read_text()


def test_fresh_run_replaces_log_of_a_run_that_failed_before_any_checkpoint(tmp_path):
    def poisoned():
        for i, b in enumerate(batches()):
            yield b if i != 1 else b * float("nan")

    with pytest.raises(NonFiniteError):
        train(make_sae("relu"), poisoned(), config(), tmp_path)
    assert len(read_log(tmp_path)[1]) == 1
    sae = make_sae("relu")
    train(sae, batches(), config(), tmp_path)
    assert [int(r[0]) for r in read_log(tmp_path)[1]] == list(range(1, 2 * N + 1))


# ----- 6. non-finite values -------------------------------------------------------------------------
def poisoned_batches(value: float, index: int):
    for i, b in enumerate(batches()):
        if i == index:
            b = b.clone()
            b[5, 7] = value
        yield b


def assert_no_partial_output(run: Path) -> None:
    assert not (run / "sae").exists()
    assert not (run / "train.json").exists()
    assert hidden_entries(run) == []


@pytest.mark.parametrize("value", [float("nan"), float("inf"), float("-inf")])
def test_non_finite_batch_names_step_and_input(tmp_path, value):
    with pytest.raises(NonFiniteError) as info:
        train(make_sae("topk"), poisoned_batches(value, 2), config(checkpoint_every=2), tmp_path)
    message = str(info.value)
    assert re.search(r"\bstep 3\b", message), message
    assert "input batch" in message
    assert_no_partial_output(tmp_path)
    assert [int(r[0]) for r in read_log(tmp_path)[1]] == [1, 2]
    assert trainer_state(tmp_path / "checkpoint")[1]["step"] == 2


def test_non_finite_loss_names_step_and_part(tmp_path):
    sae = make_sae("relu")

    def blow_up(done, parts):
        if done == 3:
            with torch.no_grad():
                sae.W_dec.mul_(1e30)  # x_hat ~ 1e29: its squared error overflows float32

    with pytest.raises(NonFiniteError) as info:
        train(sae, batches(), config(checkpoint_every=2), tmp_path, on_step=blow_up)
    message = str(info.value)
    assert re.search(r"\bstep 4\b", message), message
    assert "loss" in message and "mse" in message
    assert "input batch" not in message
    assert_no_partial_output(tmp_path)
    assert [int(r[0]) for r in read_log(tmp_path)[1]] == [1, 2, 3]


def test_nan_loss_from_nan_weights(tmp_path):
    sae = make_sae("topk")
    with torch.no_grad():
        sae.W_enc[0] = float("nan")  # (b_dec would be reset from the data before the first step)
    with pytest.raises(NonFiniteError, match=r"step 1\b.*loss"):
        train(sae, batches(), config(), tmp_path)
    assert_no_partial_output(tmp_path)
    assert not (tmp_path / "checkpoint").exists()


def test_non_finite_gradient_names_step_and_parameter(tmp_path):
    sae = make_sae("relu")
    real_loss = sae.loss
    calls = itertools.count(1)

    def loss(x):
        value, parts = real_loss(x)
        if next(calls) == 5:  # finite value, infinite gradient: d sqrt(u)/du at u = 0
            value = value + torch.sqrt(sae.b_dec - sae.b_dec.detach()).sum()
        return value, parts

    sae.loss = loss
    with pytest.raises(NonFiniteError) as info:
        train(sae, batches(), config(checkpoint_every=2), tmp_path)
    message = str(info.value)
    assert re.search(r"\bstep 5\b", message), message
    assert "b_dec" in message and "gradient" in message
    assert_no_partial_output(tmp_path)


def test_integer_batch_is_rejected(tmp_path):
    with pytest.raises(ValueError, match=r"step 1\b.*dtype"):
        train(make_sae("relu"), [torch.ones(BATCH, D_IN, dtype=torch.int64)] * 3, config(steps=3), tmp_path)
    assert_no_partial_output(tmp_path)


# ----- 7. log and lr schedule -----------------------------------------------------------------------
def test_log_columns_and_values(tmp_path):
    sae = make_sae("topk")
    parts_seen = {}
    result = train(sae, batches(), config(), tmp_path, on_step=lambda s, p: parts_seen.__setitem__(s, dict(p)))
    header, rows = read_log(tmp_path)
    assert header[:2] == ["step", "lr"]
    assert {"step", "lr", "loss", "mse", "l0", "dead_fraction", "auxk"} <= set(header)
    assert [int(r[0]) for r in rows] == list(range(1, 2 * N + 1))
    for row in log_dicts(tmp_path):
        step = int(row["step"])
        assert float(row["lr"]) == 1e-3 * lr_factor(step - 1, config())
        for key, value in parts_seen[step].items():
            assert float(row[key]) == value, (step, key)  # exact: floats are logged with repr
        assert float(row["l0"]) == 4.0  # topk with k=4: exactly k nonzero per token (ReLU rarely zeroes)
    assert result.last_parts == parts_seen[2 * N]


def test_lr_column_follows_warmup_then_constant(tmp_path):
    cfg = config(steps=8, warmup_steps=4, decay="none", lr=2e-3, checkpoint_every=0)
    train(make_sae("relu"), batches(), cfg, tmp_path)
    lrs = [float(r["lr"]) for r in log_dicts(tmp_path)]
    expected = [0.5e-3, 1e-3, 1.5e-3, 2e-3, 2e-3, 2e-3, 2e-3, 2e-3]
    assert lrs == pytest.approx(expected, rel=1e-12, abs=0)


def test_lr_factor_warmup_and_none():
    cfg = TrainConfig(steps=10, warmup_steps=4, decay="none")
    assert [lr_factor(s, cfg) for s in range(10)] == [0.25, 0.5, 0.75, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0]
    assert [lr_factor(s, TrainConfig(steps=3, warmup_steps=0)) for s in range(3)] == [1.0, 1.0, 1.0]


def test_lr_factor_linear_decay():
    # decay starts at step int(0.6 * 10) = 6 and reaches min_lr_ratio at the last step (9)
    cfg = TrainConfig(steps=10, warmup_steps=2, decay="linear", decay_start=0.6, min_lr_ratio=0.1)
    got = [lr_factor(s, cfg) for s in range(10)]
    expected = [0.5, 1, 1, 1, 1, 1, 1.0, 0.1 + 0.9 * 2 / 3, 0.1 + 0.9 / 3, 0.1]
    assert got == pytest.approx(expected, rel=1e-12, abs=1e-15)
    cfg0 = dataclasses.replace(cfg, min_lr_ratio=0.0)
    assert [lr_factor(s, cfg0) for s in (5, 6, 7, 8, 9)] == pytest.approx([1, 1, 2 / 3, 1 / 3, 0], abs=1e-15)


def test_lr_factor_cosine_decay():
    cfg = TrainConfig(steps=10, warmup_steps=0, decay="cosine", decay_start=0.6)
    # frac = (s - 6) / 3; factor = 0.5 (1 + cos(pi frac)): 1, 0.75, 0.25, 0
    assert [lr_factor(s, cfg) for s in range(10)] == pytest.approx([1] * 7 + [0.75, 0.25, 0.0], abs=1e-15)
    cfg = TrainConfig(steps=10, warmup_steps=0, decay="cosine", decay_start=0.6, min_lr_ratio=0.2)
    assert [lr_factor(s, cfg) for s in (6, 7, 8, 9)] == pytest.approx([1, 0.8, 0.4, 0.2], abs=1e-15)
    # Warm-up multiplies the decay: 20 steps, warm-up 16, decay from step 10 to step 19.
    cfg = TrainConfig(steps=20, warmup_steps=16, decay="cosine", decay_start=0.5)
    assert lr_factor(13, cfg) == pytest.approx(14 / 16 * 0.5 * (1 + math.cos(math.pi / 3)), rel=1e-12)
    # Decay over less than two steps is no decay.
    assert lr_factor(9, TrainConfig(steps=10, warmup_steps=0, decay="linear", decay_start=1.0)) == 1.0


def test_optimiser_uses_the_scheduled_lr(tmp_path):
    """With linear decay to 0, the last step has lr 0: Adam leaves the (unconstrained) weights unchanged."""
    sae = make_sae("relu")
    snap = {}

    def on_step(done, parts):
        if done == 9:
            snap.update({n: p.detach().clone() for n, p in sae.named_parameters()})

    cfg = config(steps=10, decay="linear", decay_start=0.5, min_lr_ratio=0.0, checkpoint_every=0)
    train(sae, batches(), cfg, tmp_path, on_step=on_step)
    assert float(log_dicts(tmp_path)[-1]["lr"]) == 0.0
    for name, p in sae.named_parameters():
        assert torch.equal(p.detach(), snap[name]), name
    # ... while the step before (lr > 0) did move them.
    sae2 = make_sae("relu")
    snaps = []
    train(
        sae2,
        batches(),
        cfg,
        tmp_path / "x",
        on_step=lambda s, p: snaps.append(sae2.W_enc.detach().clone()) if s in (8, 9) else None,
    )
    assert not torch.equal(snaps[0], snaps[1])


# ----- 8. decoder-norm constraint -------------------------------------------------------------------
@pytest.mark.parametrize("kind", ["topk", "batchtopk", "jumprelu", "gated"])
def test_unit_norm_decoder_kinds(tmp_path, kind):
    sae = make_sae(kind)
    train(sae, batches(), config(lr=1e-2, checkpoint_every=0), tmp_path)
    norms = sae.W_dec.detach().norm(dim=1)
    assert torch.allclose(norms, torch.ones_like(norms), rtol=0, atol=1e-5), norms
    saved = load(tmp_path / "sae").W_dec.norm(dim=1)
    assert torch.allclose(saved, torch.ones_like(saved), rtol=0, atol=1e-5)


def test_relu_decoder_is_not_constrained(tmp_path):
    sae = make_sae("relu")
    init = sae.W_dec.detach().clone()
    assert torch.allclose(init.norm(dim=1), torch.full((D_SAE,), 0.1), atol=1e-6)
    train(sae, batches(), config(lr=1e-2, checkpoint_every=0), tmp_path)
    norms = sae.W_dec.detach().norm(dim=1)
    assert (norms - 1).abs().min() > 0.5  # nowhere near unit norm
    assert (norms - 0.1).abs().max() > 1e-3  # and the norms did change freely


# ----- 9. outputs ------------------------------------------------------------------------------------
@pytest.mark.parametrize("kind", ["batchtopk", "sparsemax_attention", "gated"])
def test_final_folder_and_summary(tmp_path, kind):
    sae = make_sae(kind)
    cfg = config()
    result = train(sae, batches(), cfg, tmp_path)
    assert result.sae_dir == tmp_path / "sae" and result.run_dir == tmp_path and result.steps == 2 * N
    loaded = load(result.sae_dir)
    assert type(loaded) is type(sae) and loaded.cfg == sae.cfg
    assert_state_equal(sae.state_dict(), loaded.state_dict())
    x = next(iter(DATA.batches(32, seed=99)))
    sae.eval()
    loaded.eval()
    with torch.no_grad():
        for a, b in zip(sae(x), loaded(x), strict=True):
            assert torch.equal(a, b)
    summary = json.loads((tmp_path / "train.json").read_text())
    assert summary["kind"] == kind
    assert summary["sae_config"] == json.loads(json.dumps(dataclasses.asdict(sae.cfg)))
    assert summary["train_config"] == json.loads(json.dumps(dataclasses.asdict(cfg)))
    assert summary["last_step"] == result.last_parts
    assert summary["last_step"] == {k: float(v) for k, v in log_dicts(tmp_path)[-1].items() if k not in ("step", "lr")}
    prov = summary["provenance"]
    assert "git_commit" in prov
    assert prov["git_commit"] is None or re.fullmatch(r"[0-9a-f]{40}(-dirty)?", prov["git_commit"])
    assert prov["packages"]["torch"] is not None and prov["packages"]["safetensors"] is not None
    assert summary["seconds_this_session"] >= 0
    # Checkpoint at the end, nothing temporary left.
    assert trainer_state(tmp_path / "checkpoint")[1]["step"] == 2 * N
    assert sorted(p.name for p in tmp_path.iterdir()) == ["checkpoint", "log.csv", "sae", "train.json"]


def test_progress_bar_goes_to_stderr(tmp_path, capsys):
    train(make_sae("relu"), batches(), config(steps=3, progress=True), tmp_path)
    assert "train relu" in capsys.readouterr().err


def test_batches_from_a_list_and_leading_dimensions(tmp_path):
    """Any iterable of (..., d_in) tensors: a list of (2, 32, d_in) batches trains like the flat stream."""
    flat = list(itertools.islice(batches(), 4))
    a, b = make_sae("relu"), make_sae("relu")
    train(a, flat, config(steps=4, checkpoint_every=0), tmp_path / "a")
    train(b, [t.reshape(2, BATCH // 2, D_IN) for t in flat], config(steps=4, checkpoint_every=0), tmp_path / "b")
    assert_state_equal(a.state_dict(), b.state_dict())


# ----- 10. invalid settings --------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("steps", 0),
        ("steps", -3),
        ("steps", 2.5),
        ("lr", -1.0),
        ("lr", 0.0),
        ("lr", float("nan")),
        ("decay", "foo"),
        ("warmup_steps", -1),
        ("decay_start", 1.5),
        ("min_lr_ratio", -0.1),
        ("checkpoint_every", -1),
        ("betas", (0.9, 1.0)),
        ("eps", 0.0),
    ],
)
def test_invalid_train_config(tmp_path, field, value):
    cfg = TrainConfig(**{"steps": 5, field: value})
    with pytest.raises(ValueError, match=rf"setting {field}="):
        cfg.validate()
    run = tmp_path / "run"
    with pytest.raises(ValueError, match=rf"setting {field}="):
        train(make_sae("relu"), batches(), cfg, run)
    assert not run.exists()  # validated before anything is written


def test_data_running_out(tmp_path):
    data = list(itertools.islice(batches(), 5))
    with pytest.raises(ValueError, match=r"ran out after 5 batches"):
        train(make_sae("relu"), data, config(steps=8, checkpoint_every=0), tmp_path)
    assert_no_partial_output(tmp_path)
    assert len(read_log(tmp_path)[1]) == 5


def test_resume_refuses_other_training_settings(tmp_path):
    run = tmp_path / "run"
    with pytest.raises(Stop):
        train(make_sae("relu"), batches(), config(), run, on_step=stop_after(N))
    with pytest.raises(ValueError, match="training settings"):
        train(make_sae("relu"), batches(), config(lr=2e-3), run, resume=True)
    # display and checkpoint cadence may change
    train(make_sae("relu"), batches(), config(checkpoint_every=4, progress=False), run, resume=True)


def test_resuming_a_finished_run_republishes_it(tmp_path):
    run = tmp_path / "run"
    first = train(make_sae("topk"), batches(), config(), run)
    again = train(make_sae("topk"), batches(), config(), run, resume=True)
    assert again.last_parts == pytest.approx(first.last_parts, rel=1e-6)
    assert_state_equal(load(first.sae_dir).state_dict(), load(again.sae_dir).state_dict())
    with pytest.raises(ValueError, match="training settings"):  # the decay schedule depends on steps
        train(make_sae("topk"), batches(), config(steps=3 * N), run, resume=True)
    flat = tmp_path / "flat"
    train(make_sae("topk"), batches(), config(decay="none"), flat)
    with pytest.raises(ValueError, match="beyond"):
        train(make_sae("topk"), batches(), config(decay="none", steps=N), flat, resume=True)
    longer = train(make_sae("topk"), batches(), config(decay="none", steps=3 * N), flat, resume=True)
    assert longer.steps == 3 * N and len(log_dicts(flat)) == 3 * N


def test_stale_temporaries_are_removed(tmp_path):
    run = tmp_path / "run"
    with pytest.raises(Stop):
        train(make_sae("relu"), batches(), config(), run, on_step=stop_after(N))
    (run / ".checkpoint.tmpabc").mkdir()
    (run / ".sae.tmpxyz").mkdir()
    (run / ".log.csv.123.tmp").write_text("junk")
    train(make_sae("relu"), batches(), config(), run, resume=True)
    assert hidden_entries(run) == []


def test_decay_starts_at_the_rounded_step():
    cfg = TrainConfig(steps=100, warmup_steps=0, decay="linear", decay_start=0.29)
    assert lr_factor(28, cfg) == 1.0 and lr_factor(29, cfg) == 1.0 and lr_factor(30, cfg) < 1.0


@pytest.mark.parametrize(("field", "value"), [("steps", True), ("decay_start", "0.5"), ("betas", (0.9,))])
def test_invalid_types_are_value_errors(field, value):
    with pytest.raises(ValueError, match=field):
        TrainConfig(**{"steps": 10, field: value}).validate()


@pytest.mark.parametrize(
    "kind, hp",
    [
        ("batchtopk", {"k": 4}),
        ("topk", {"k": 4}),
        ("relu", {"decode": "sparse"}),
        ("jumprelu", {"decode": "sparse", "bandwidth": 0.5}),
        ("gated", {"decode": "sparse"}),
        ("sparsemax_attention", {"decode": "sparse"}),
    ],
)
def test_two_threads_are_deterministic_too(tmp_path, kind, hp):
    """Thread-dependent summation order in CPU index_put accumulation (the backward of advanced indexing)
    once made BatchTopK runs diverge after about ten steps with two threads; the sparse paths now gather with
    index_select, so two runs agree bit for bit without PyTorch's deterministic-algorithms switch."""
    torch.set_num_threads(2)
    try:
        data = PlantedFeatures(d_in=64, n_features=256, mean_active=4, noise=0.01, seed=0)
        states = []
        for run in ("a", "b"):
            assert not torch.are_deterministic_algorithms_enabled()
            sae = create(kind, 64, 1024, **hp)
            cfg = config(steps=20, lr=1e-2, warmup_steps=10, checkpoint_every=0, decay="none")
            train(sae, data.batches(512), cfg, tmp_path / run)
            states.append(sae.state_dict())
        assert_state_equal(states[0], states[1])
        assert not torch.are_deterministic_algorithms_enabled()  # restored afterwards
    finally:
        torch.set_num_threads(1)


@pytest.mark.parametrize("name", ["sae.safetensors", "trainer.safetensors"])
def test_resume_refuses_a_checkpoint_with_zeroed_bytes_naming_the_file(tmp_path, name):
    """Before, 8 zeroed bytes in the checkpoint's weights resumed silently from the damaged values."""
    with pytest.raises(Stop):
        train(make_sae("topk"), batches(), config(), tmp_path, on_step=stop_after(N))
    target = tmp_path / "checkpoint" / name
    raw = bytearray(target.read_bytes())
    at = len(raw) - 64
    raw[at : at + 8] = bytes(8)
    target.write_bytes(bytes(raw))
    with pytest.raises(ValueError, match=rf"corrupt .*checkpoint.*{re.escape(name)}"):
        train(make_sae("topk"), batches(), config(), tmp_path, resume=True)
    assert not (tmp_path / "sae").exists() and not (tmp_path / "train.json").exists()


def test_resume_refuses_an_unreadable_trainer_record(tmp_path):
    with pytest.raises(Stop):
        train(make_sae("relu"), batches(), config(), tmp_path, on_step=stop_after(N))
    (tmp_path / "checkpoint" / "trainer.json").write_text('{"step": 6, "adam')
    with pytest.raises(ValueError, match=r"corrupt checkpoint file .*trainer\.json"):
        train(make_sae("relu"), batches(), config(), tmp_path, resume=True)


# ----- convergence ----------------------------------------------------------------------------------
def _records(nmse_by_fraction: dict[float, float], steps: int = 1000) -> list[dict]:
    return [
        {"step": round(f * steps), "fraction": f, "nmse": v, "l0": 10.0} for f, v in sorted(nmse_by_fraction.items())
    ]


def test_convergence_window_ends_where_the_decay_begins():
    cfg = TrainConfig(steps=1000)  # linear decay from 80 %
    assert train_mod.convergence_window(cfg) == pytest.approx((0.55, 0.8))
    assert train_mod.convergence_window(dataclasses.replace(cfg, decay="none")) == pytest.approx((0.75, 1.0))
    assert train_mod.convergence_window(dataclasses.replace(cfg, decay_start=1.0)) == pytest.approx((0.75, 1.0))
    # a decay over most of the run leaves no constant-lr plateau to judge: the last quarter
    assert train_mod.convergence_window(dataclasses.replace(cfg, decay_start=0.3)) == pytest.approx((0.75, 1.0))
    assert train_mod.validation_steps(cfg) == [250, 500, 550, 750, 800, 1000]


def test_annealing_alone_does_not_fail_convergence():
    """Flat at constant lr (0.200 -> 0.199 over 55-80 %), then the decay lowers NMSE by 5 %: converged, and
    the annealing's gain is still reported as the last quarter's."""
    conv = train_mod.convergence(
        _records({0.25: 0.3, 0.5: 0.201, 0.55: 0.200, 0.75: 0.1995, 0.8: 0.199, 1.0: 0.189}), window=(0.55, 0.8)
    )
    assert conv["converged"] is True
    assert conv["plateau_improvement"] == pytest.approx((0.200 - 0.199) / 0.200)
    assert (conv["from_step"], conv["to_step"]) == (550, 800)
    assert conv["last_quarter_improvement"] == pytest.approx((0.1995 - 0.189) / 0.1995)


def test_still_learning_before_the_decay_is_not_converged():
    conv = train_mod.convergence(
        _records({0.25: 0.4, 0.5: 0.3, 0.55: 0.28, 0.75: 0.25, 0.8: 0.24, 1.0: 0.23}), window=(0.55, 0.8)
    )
    assert conv["converged"] is False
    assert conv["plateau_improvement"] == pytest.approx((0.28 - 0.24) / 0.28)


def test_convergence_with_the_default_window_and_too_few_records():
    conv = train_mod.convergence(_records({0.25: 0.3, 0.5: 0.25, 0.75: 0.2, 1.0: 0.199}))
    assert conv["converged"] is True and (conv["from_step"], conv["to_step"]) == (750, 1000)
    assert conv["plateau_improvement"] == pytest.approx(conv["last_quarter_improvement"])
    assert train_mod.convergence(_records({1.0: 0.2}))["converged"] is None
