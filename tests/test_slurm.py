"""The cluster path, for real: config/micro.yaml (extract -> train -> guide -> train -> evaluate -> reports)
through a single-node SLURM cluster on loopback (scripts/slurm-local.sh) with the workflow's SLURM profile,
and the same config run locally.

Checked: every job went through SLURM (submission lines in Snakemake's log, allocation and completion in
the controller's log, and the job id recorded in each result's provenance); a training job cancelled with
``scancel`` after its first checkpoint is resubmitted and resumes from the checkpoint it wrote on SIGTERM;
and the results (metrics, tables, audit, SAE weights, training logs) are identical to the local run.

Needs root and the Debian packages slurm-wlm and munge (installed by ``slurm-local.sh install`` when
missing, if apt can reach its mirror); skipped with the reason otherwise. Every wait is bounded.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SCRIPT = REPO / "scripts" / "slurm-local.sh"
STATE = Path(os.environ.get("SLURM_LOCAL_DIR", "/tmp/sae-repro-slurm"))
RUNS = "runs/micro"
KILLED_RUN = "vision/sparsemax_attention/default/x1/s0"
KILLED_COMMENT = "rule_train_wildcards_vision_sparsemax_attention_default_1_0"
DAG_TIMEOUT = 900  # seconds for the whole SLURM run before it is interrupted and the test fails
SUBMITTED = re.compile(r"Job \S+ has been submitted with SLURM jobid (\d+) \(log: \S*/slurm_logs/([^/]+)/")


def _unavailable() -> str | None:
    if not sys.platform.startswith("linux"):
        return "a local SLURM cluster needs Linux"
    if os.geteuid() != 0:
        return "starting munged, slurmctld and slurmd needs root"
    if shutil.which("slurmctld") is None and shutil.which("apt-get") is None:
        return "SLURM is not installed and there is no apt-get to install it"
    return None


def _script(*args: str, timeout: float) -> subprocess.CompletedProcess:
    return subprocess.run(
        ["bash", str(SCRIPT), *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env={**os.environ, "SLURM_LOCAL_DIR": str(STATE)},
    )


def _port_in_use(port: int) -> bool:
    with socket.socket() as s:
        return s.connect_ex(("127.0.0.1", port)) == 0


def _plugin_installed() -> bool:
    import importlib.util

    return importlib.util.find_spec("snakemake_executor_plugin_slurm") is not None


@pytest.fixture(scope="module")
def cluster():
    """A running local cluster: reused if slurm-local.sh already runs one (and left running), else
    installed if needed, started, and stopped afterwards."""
    reason = _unavailable()
    if reason:
        pytest.skip(reason)
    if _script("status", timeout=30).returncode == 0:
        yield STATE
        return
    if _port_in_use(6817) or _port_in_use(6818):
        pytest.skip("another SLURM controller or node daemon already listens on port 6817/6818")
    if shutil.which("slurmctld") is None or shutil.which("munged") is None or not _plugin_installed():
        try:
            out = _script("install", timeout=600)
        except subprocess.TimeoutExpired:
            pytest.skip("installing slurm-wlm and munge took over 10 minutes (no package mirror?)")
        if out.returncode != 0:
            pytest.skip(f"could not install slurm-wlm, munge and the executor plugin: {out.stderr[-500:]}")
    started = _script("start", timeout=120)
    try:
        assert started.returncode == 0, f"slurm-local.sh start failed:\n{started.stdout}\n{started.stderr}"
        yield STATE
    finally:
        stopped = _script("stop", timeout=120)
        assert stopped.returncode == 0, stopped.stderr


def _snakemake(work: Path, *args: str) -> list[str]:
    return [
        sys.executable,
        "-m",
        "snakemake",
        "-s",
        str(REPO / "Snakefile"),
        "-d",
        str(work),
        "--configfile",
        str(work / "micro.yaml"),
        *args,
    ]


def _workdir(root: Path) -> Path:
    root.mkdir(parents=True)
    shutil.copy(REPO / "config" / "micro.yaml", root / "micro.yaml")
    return root


def _checkpoint_step(run: Path) -> int | None:
    try:
        return json.loads((run / "checkpoint" / "trainer.json").read_text())["step"]
    except (OSError, ValueError, KeyError):
        return None


def _running_job(comment: str) -> str | None:
    out = subprocess.run(["squeue", "-h", "-t", "RUNNING", "-o", "%i %k"], capture_output=True, text=True, timeout=30)
    return next((line.split()[0] for line in out.stdout.splitlines() if line.split()[1:] == [comment]), None)


@pytest.fixture(scope="module")
def local_run(tmp_path_factory):
    """The micro DAG on this machine. (Not run alongside the SLURM run: 4 busy threads on 2 cores slowed both
    several-fold.)"""
    work = _workdir(tmp_path_factory.mktemp("micro") / "local")
    out = subprocess.run(_snakemake(work, "--cores", "2"), capture_output=True, text=True, timeout=DAG_TIMEOUT)
    assert out.returncode == 0, out.stderr[-3000:]
    return work


@pytest.fixture(scope="module")
def slurm_run(cluster, tmp_path_factory):
    """The micro DAG through SLURM; the sparsemax training job is cancelled once it has a checkpoint."""
    return _slurm_run(_workdir(tmp_path_factory.mktemp("micro") / "slurm"))


def _slurm_run(work: Path) -> dict:
    """Run the micro DAG in ``work`` through SLURM, cancelling the sparsemax training job once it has a
    checkpoint; Snakemake's log, the cancelled job and the wall time."""
    run = work / RUNS / KILLED_RUN
    log = work / "snakemake.log"
    began = time.monotonic()
    with open(log, "w") as sink:
        proc = subprocess.Popen(
            _snakemake(
                work, "--profile", str(REPO / "profiles" / "slurm"), "--jobs", "2", "--slurm-keep-successful-logs"
            ),
            stdout=sink,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        killed = None
        try:
            while proc.poll() is None and time.monotonic() - began < DAG_TIMEOUT:
                if killed is None and _checkpoint_step(run) and not (run / "train.json").exists():
                    job = _running_job(KILLED_COMMENT)
                    if job is not None:
                        subprocess.run(["scancel", job], check=True, timeout=30)
                        killed = {"job": job, "seen_step": _checkpoint_step(run)}
                time.sleep(0.2)
            if proc.poll() is None:  # interrupt: SIGINT makes Snakemake cancel its SLURM jobs
                os.killpg(proc.pid, signal.SIGINT)
                try:
                    proc.wait(timeout=60)
                except subprocess.TimeoutExpired:
                    os.killpg(proc.pid, signal.SIGKILL)
                    proc.wait(timeout=30)
                pytest.fail(f"the SLURM run did not finish within {DAG_TIMEOUT} s; log: {log.read_text()[-3000:]}")
        finally:
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(timeout=30)
    text = log.read_text(errors="replace")
    assert proc.returncode == 0, text[-4000:]
    assert killed is not None, (
        "the sparsemax training job finished before it could be cancelled: raise train.steps in config/micro.yaml"
    )
    return {"work": work, "log": text, "killed": killed, "seconds": time.monotonic() - began}


def _submissions(log: str) -> list[tuple[str, str]]:
    """(SLURM job id, rule or group name) of every submission in Snakemake's log; the SLURM log folder is
    rule_<rule>/... for a job and group_<group>_<its rules> for a group job."""
    subs = []
    for m in SUBMITTED.finditer(log):
        folder = m.group(2)
        subs.append((m.group(1), folder.removeprefix("rule_") if folder.startswith("rule_") else folder.split("_")[1]))
    return subs


def test_every_job_went_through_slurm(slurm_run, cluster):
    subs = _submissions(slurm_run["log"])
    rules = sorted(name for _, name in subs)
    # 2 extractions (training and test split), the head's pooled features, 3 trainings (+1 resubmission), the
    # guidance, 3 evaluations, 1 group job for 15 reports
    assert rules == ["evaluate"] * 3 + ["extract"] * 2 + ["guide", "head_features", "report"] + ["train"] * 4, rules
    assert "Group job report" in slurm_run["log"]
    controller = (cluster / "log" / "slurmctld.log").read_text(errors="replace")
    for job, _ in subs:
        # the main scheduler logs "sched: Allocate JobId=N ..."; the backfill scheduler (slurm 22.05) logs
        # "sched/backfill: _start_job: Started JobId=N in debug on HOST"
        assert re.search(rf"(sched: Allocate|backfill: (_start_job: )?Started) JobId={job} ", controller), (
            f"job {job} never ran"
        )
        if job == slurm_run["killed"]["job"]:
            assert re.search(rf"REQUEST_KILL_JOB JobId={job} ", controller), f"no cancellation of job {job}"
        else:
            assert re.search(rf"_job_complete: JobId={job} WEXITSTATUS 0", controller), f"job {job} not complete"
    # each result was computed inside the SLURM job Snakemake submitted for it
    work = slurm_run["work"]
    jobs = {job for job, _ in subs}
    for summary in (work / RUNS).glob("*/*/*/x*/s*/train.json"):
        assert json.loads(summary.read_text())["provenance"]["slurm_job_id"] in jobs
    evals = list((work / RUNS).glob("*/*/*/x*/s*/eval/[!i]*.json"))
    assert len(evals) == 6
    for result in evals:
        assert json.loads(result.read_text())["provenance"]["slurm_job_id"] in jobs


def test_a_cancelled_training_job_is_resubmitted_and_resumes_from_its_checkpoint(slurm_run):
    killed = slurm_run["killed"]
    log = slurm_run["log"]
    assert f"SLURM-job '{killed['job']}' failed, SLURM status is: 'CANCELLED'" in log
    assert "Trying to restart job" in log
    resubmitted = [job for job, name in _submissions(log) if name == "train" and int(job) > int(killed["job"])]
    summary = json.loads((slurm_run["work"] / RUNS / KILLED_RUN / "train.json").read_text())
    steps, every = summary["train_config"]["steps"], summary["train_config"]["checkpoint_every"]
    # SIGTERM from scancel makes the trainer checkpoint the step in progress: nothing after it is lost
    assert killed["seen_step"] <= summary["resumed_from_step"] < steps
    assert summary["resumed_from_step"] >= every
    assert summary["provenance"]["slurm_job_id"] in resubmitted


def test_results_equal_the_local_run(slurm_run, local_run):
    work = slurm_run["work"]
    same = [
        "results/micro/metrics.csv",
        "results/micro/audit.md",
        *(f"results/micro/tables/{p.name}" for p in (local_run / "results/micro/tables").iterdir()),
    ]
    for run in (local_run / RUNS).glob("*/*/*/x*/s*"):
        rel = run.relative_to(local_run)
        same += [f"{rel}/sae/sae.safetensors", f"{rel}/sae/cfg.json", f"{rel}/log.csv"]
    assert len(same) > 12
    for rel in same:
        assert (work / rel).read_bytes() == (local_run / rel).read_bytes(), f"{rel} differs from the local run"
    figures = sorted(p.name for p in (local_run / "figures/micro").iterdir())
    assert figures == sorted(p.name for p in (work / "figures/micro").iterdir()) and len(figures) == 12
    print(f"micro DAG through SLURM: {slurm_run['seconds']:.0f} s (with one cancelled and resumed job)")
