# Config validation (before any job runs), the plan, and the paths every rule shares.

import json
from pathlib import Path

from snakemake.utils import validate

from repro.workflow import check_config, make_plan, hyperparameters

validate(config, "../../config/schema.yaml")
check_config(config)
PLAN = make_plan(config)
RUNS = config["runs_root"]
RESULTS = config["results_root"]
FIGURES = config["figures_root"]
CACHE = config["cache_root"]
PY = "python -m repro.cli"


wildcard_constraints:
    role="language|vision",
    kind="[a-z_]+",
    setting="[^/]+",
    expansion=r"\d+",
    seed=r"\d+",
    eval="[a-z_]+",
    table="[a-z_0-9]+",
    figure="[a-z_0-9]+",


def backbone(role):
    """The role's backbone entry with the schema's defaults filled in."""
    return {"seed": 0, "train_limit": None, "test_limit": None, "dtype": "float32", "data_root": None,
            **config["backbones"][role]}


def data_root_option(role):
    root = backbone(role)["data_root"]
    return f"--data-root {root}" if root else ""


def limit_option(limit):
    return "" if limit is None else f"--limit {limit}"


def run_path(run):
    return f"{RUNS}/{run.id}"


def eval_outputs():
    """The evaluation index of every run of the plan."""
    return sorted(f"{run_path(run)}/eval/index.json" for run in PLAN.runs.values())


def aggregate_inputs(wildcards):
    """The evaluation JSONs, unless the runs are absent and the committed metrics are reused (rebuild: false)."""
    if not config.get("rebuild", False) and not Path(RUNS).exists() and Path(f"{RESULTS}/metrics.csv").exists():
        return []
    return eval_outputs()


def final_outputs():
    """Everything `all` builds: the metrics, every table (md, tex), every figure (pdf, png), the audit."""
    from repro.report.figures import FIGURES as FIGURE_SPECS
    from repro.report.tables import TABLES

    tables = [f"{RESULTS}/tables/{t}.{ext}" for t in TABLES for ext in ("md", "tex")]
    figures = [f"{FIGURES}/{f}.{ext}" for f in FIGURE_SPECS for ext in ("pdf", "png")]
    return [f"{RESULTS}/metrics.csv", *tables, *figures, f"{RESULTS}/audit.md"]
