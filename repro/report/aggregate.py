"""Aggregate evaluation JSONs (``repro evaluate``) into one tidy CSV, one row per (run, eval, metric).

Columns (:data:`COLUMNS`): ``config``, ``run``, ``backbone``, ``dataset``, ``hook``, ``kind``, ``d_sae``,
``expansion`` (d_sae / d_in; an int when whole), ``seed``, ``setting`` (the run's hyperparameter label, e.g. "default",
"k=24", "guided"), ``eval``, ``metric``, ``value``. ``config``, ``run`` and ``setting`` come from the labels
recorded at training time (``repro train --label key=value``); the rest from the evaluation record.

Metrics per evaluation (:func:`flatten`, each evaluation's ``flatten`` in :mod:`repro.evals.registry`):

- ``reconstruction``: every scalar key of :mod:`repro.metrics` (``nmse``, ``ev``, ``mse``, ``l0``, …) plus
  the per-token L0 quantiles as ``l0_p5`` … ``l0_p99``, ``l0_min``, ``l0_max``, and the bootstrap 95 %
  intervals over test examples as ``nmse_ci_lo``/``nmse_ci_hi`` and ``l0_ci_lo``/``l0_ci_hi``, and
  ``l0_complexity_rho`` (:mod:`repro.evals.calibration`);
- ``lm_loss``: every scalar (``ce_delta``, ``ce_loss_score``, ``kl_sae``, …);
- ``topn``: the class-balanced accuracies in percent, named as the settings (``no_sae``, ``sae``,
  ``on_all``, ``off_all``, ``zero``, ``official/on_1``, ``heldout/off_5``, ``heldout/random_5``,
  ``official/agnostic_1``, …), their bootstrap 95 % intervals over test examples as ``<setting>_ci_lo`` /
  ``<setting>_ci_hi``, and ``gate_usable`` (1 when the setup passes its gate, else 0);
- ``probing``: the summary (``sae_top_1`` …, ``raw_top_1`` …, ``raw_all``);
- ``train`` (one set per run, from the run's training record in its evaluation records; :func:`train_rows`):
  ``tokens_seen``, ``steps``, ``train_tokens``, ``converged``, ``plateau_improvement`` (the relative NMSE gain
  behind ``converged``), ``last_quarter_improvement``, ``val_nmse``, ``val_l0``, and the sparsity knob as trained
  (``hp_k``, ``hp_l1_coefficient``, ``hp_l0_coefficient``, where the kind has one);
- ``interpretability``: ``purity_mean``, ``purity_median``, ``entropy_mean``, ``entropy_median``,
  ``entropy_official_mean``, ``entropy_official_median``, ``baseline_purity``, ``baseline_entropy``,
  ``n_alive``, ``n_scored``, ``n_dead``.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable
from pathlib import Path

from repro import eval_record
from repro.kinds import knobs
from repro.report import metrics_csv


def _ratio(a: int, b: int) -> int | float:
    return a // b if a % b == 0 else round(a / b, 4)


def flatten(name: str, results: dict) -> dict[str, float]:
    """The metrics of one evaluation's ``results`` as {metric: value}: its ``flatten`` in the evaluation
    catalogue (:mod:`repro.evals.registry`; names in the module docstring)."""
    from repro.evals.registry import get

    return get(name).flatten(results)


def _identity(record: dict, labels: dict) -> dict:
    """The columns every row of one evaluation record shares (all of :data:`COLUMNS` but metric and value)."""
    cfg = record["sae_config"]
    data = record["data"]
    split = data["splits"].get("test") or next(iter(data["splits"].values()))
    return {
        "config": labels.get("config", ""),
        "run": labels.get("run", record["run"]),
        "backbone": data["backbone"]["name"],
        "dataset": split["dataset"]["name"],
        "hook": data["hook"],
        "kind": record["kind"],
        "d_sae": int(cfg["d_sae"]),
        "expansion": _ratio(int(cfg["d_sae"]), int(cfg["d_in"])),
        "seed": record["seed"],
        "setting": labels.get("setting", "default"),
        "eval": record["eval"],
    }


def rows_of(record: dict, labels: dict | None = None) -> list[dict]:
    """Tidy rows of one evaluation record (the JSON written by ``repro evaluate``)."""
    base = _identity(record, labels or {})
    return [base | {"metric": m, "value": v} for m, v in flatten(record["eval"], record["results"]).items()]


def train_rows(record: dict, labels: dict | None = None) -> list[dict]:
    """Rows with ``eval`` = "train" for the run of the evaluation ``record`` (:mod:`repro.eval_record`: the
    run's training record, training config and SAE config travel with it): ``tokens_seen``, ``steps``,
    ``train_tokens`` (distinct training tokens of its cache, the validation tail excluded), ``converged`` (1, 0,
    or NaN when unknown), ``plateau_improvement`` (the gain it judges; NaN in a record written before it existed),
    ``last_quarter_improvement``, the held-out ``val_nmse`` / ``val_l0`` at the end of training, and the sparsity
    knob as trained."""
    template = _identity(record, labels or {}) | {"eval": "train"}
    training = record.get("training") or {}
    conv = training.get("converged")
    final = training.get("final_validation") or {}
    values = {
        "tokens_seen": training.get("tokens_seen"),
        "steps": (record.get("train_config") or {}).get("steps"),
        "train_tokens": record.get("train_tokens"),
        "converged": math.nan if conv is None else float(bool(conv)),
        "plateau_improvement": training.get("plateau_improvement"),
        "last_quarter_improvement": training.get("last_quarter_improvement"),
        "val_nmse": final.get("nmse"),
        "val_l0": final.get("l0"),
    }
    cfg = record.get("sae_config") or {}
    values |= {
        f"hp_{k}": cfg[k]
        for k in knobs()  # the sparsity knobs of the kind catalogue (one per run)
        if isinstance(cfg.get(k), (int, float)) and not isinstance(cfg.get(k), bool)
    }
    return [template | {"metric": m, "value": math.nan if v is None else float(v)} for m, v in values.items()]


def expand_indexes(files: Iterable[str | Path]) -> list[str]:
    """Evaluation JSON paths, with each index file (``repro evaluate --index``: {eval: path}) replaced by
    the files it lists."""
    out = []
    for f in map(str, files):
        record = json.loads(Path(f).read_text())
        out += [str(p) for p in record.values()] if "eval" not in record else [f]
    return out


def aggregate(eval_files: Iterable[str | Path], out_csv: str | Path) -> int:
    """Write the tidy CSV of the given evaluation JSONs or index files (atomically; read through
    :func:`repro.eval_record.read`, which carries each run's labels and training record); returns the number of
    rows (:func:`repro.report.metrics_csv.write`)."""
    rows, seen = [], set()
    for path in sorted(expand_indexes(eval_files)):
        record = eval_record.read(path)
        rows += rows_of(record, record["labels"])
        if record["training"] is not None and record["run"] not in seen:  # None: an old record of a removed run
            seen.add(record["run"])
            rows += train_rows(record, record["labels"])
    return metrics_csv.write(rows, out_csv)
