"""Wall time of one workflow config run locally and through SLURM (the workflow's profile) at several
status-polling settings, side by side.

Needs a running cluster (``scripts/slurm-local.sh start``, as root). Each variant builds the whole DAG from
scratch in its own folder under ``--work`` (its own activation cache), one after the other, so that they
do not compete for the cores:

    python benchmarks/slurm_overhead.py                              # config/micro.yaml; init 1 5 10 20
    python benchmarks/slurm_overhead.py --inits 5 --config config/tiny.yaml

Where the SLURM time goes: every job starts Snakemake twice (the batch script, then ``srun``), and the
executor plugin polls ``squeue`` first ``init`` seconds after a submission, then 10 s later each time,
adding 10 s per poll that finds nothing finished and going back to ``init`` when a job finishes.
"""

from __future__ import annotations

import argparse
import csv
import shutil
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def run_dag(work: Path, config: Path, extra: list[str]) -> tuple[float, str]:
    """Build the DAG of ``config`` in a fresh ``work`` folder; (wall seconds, Snakemake's log)."""
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    shutil.copy(config, work / config.name)
    cmd = [
        sys.executable,
        "-m",
        "snakemake",
        "-s",
        str(REPO / "Snakefile"),
        "-d",
        str(work),
        "--configfile",
        str(work / config.name),
        *extra,
    ]
    began = time.perf_counter()
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=3600)
    seconds = time.perf_counter() - began
    if out.returncode != 0:
        sys.exit(f"{' '.join(extra)}: Snakemake failed:\n{out.stderr[-3000:]}")
    return seconds, out.stderr


def job_seconds(work: Path) -> float:
    """Sum of the jobs' own wall times (the rules' benchmark files)."""
    total = 0.0
    for tsv in work.rglob("benchmarks/**/*.tsv"):
        with open(tsv) as f:
            total += sum(float(row["s"]) for row in csv.DictReader(f, delimiter="\t"))
    return total


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--config", default=str(REPO / "config" / "micro.yaml"))
    ap.add_argument(
        "--inits",
        type=int,
        nargs="+",
        default=[1, 5, 10, 20],
        help="values of --slurm-init-seconds-before-status-checks to try",
    )
    ap.add_argument("--jobs", type=int, default=2, help="SLURM jobs at a time (and local cores)")
    ap.add_argument("--work", default="/tmp/sae-repro-slurm-bench")
    args = ap.parse_args()
    if subprocess.run(["sinfo", "-h"], capture_output=True, timeout=30).returncode != 0:
        sys.exit("no SLURM cluster answers: start one with 'scripts/slurm-local.sh start'")
    config, work = Path(args.config).resolve(), Path(args.work)

    rows = []
    local, _ = run_dag(work / "local", config, ["--cores", str(args.jobs)])
    rows.append(("local", local, job_seconds(work / "local"), 0))
    print(f"local: {local:.0f} s", flush=True)
    for init in args.inits:
        folder = work / f"slurm-init{init}"
        seconds, log = run_dag(
            folder,
            config,
            [
                "--profile",
                str(REPO / "profiles" / "slurm"),
                "--jobs",
                str(args.jobs),
                "--slurm-init-seconds-before-status-checks",
                str(init),
            ],
        )
        rows.append((f"slurm, init {init} s", seconds, job_seconds(folder), log.count("submitted with SLURM jobid")))
        print(f"slurm init {init}: {seconds:.0f} s", flush=True)

    print(f"\n{config.name}, {args.jobs} jobs at a time\n")
    print(f"{'variant':<18} {'wall s':>7} {'x local':>8} {'job s':>7} {'SLURM jobs':>11}")
    for name, seconds, jobs_s, n in rows:
        print(f"{name:<18} {seconds:>7.0f} {seconds / local:>8.2f} {jobs_s:>7.0f} {n:>11}")


if __name__ == "__main__":
    main()
