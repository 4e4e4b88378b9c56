"""The workflow's plan: which runs, evaluations and reports a validated config asks for.

The Snakefile is a thin shell over this module, so that the plan is unit-testable without Snakemake.
A config (``config/default.yaml``, ``config/paper.yaml``; schema ``config/schema.yaml``) names backbones by
role ("language", "vision"), a training recipe, the hyperparameters of each SAE kind (the "default"
setting), and experiments. Each experiment asks for runs on one backbone role:

- ``size_sweep``: every kind at every expansion (Table A; NMSE and CE degradation by dictionary size);
- ``ablation``: the Table B configurations at one expansion (top-n classification);
- ``methods``: ReLU/TopK/BatchTopK/sparsemax at one expansion (per-dataset top-n, probing, concepts);
- ``guidance``: TopK/BatchTopK at fixed k (``k=24``, ``k=32``) and at the k derived from the sparsemax
  run's measured L0 (setting ``guided``; the ``guide`` rule is the DAG edge);
- ``pareto``: sweeps of one hyperparameter per kind (settings ``<key>=<value>``) for the MSE–L0 frontier,
  with the sparsemax SAE they are matched to (its default setting at the same size and seeds).

A run is identified by ``<role>/<kind>/<setting>/x<expansion>/s<seed>`` and lives in
``<runs_root>/<that id>``; its evaluations are the union of those its experiments ask for.

``external`` lists SAEs trained elsewhere (SAELens folders): each is imported (``repro import``, the
``import_sae`` rule) as the run ``<role>/external/<name>`` on that role's cache, with setting ``external``, and
evaluated like a trained run (:attr:`Plan.external`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

SETTINGS_DEFAULT = "default"
GUIDED = "guided"
EXTERNAL = "external"
GUIDE_SOURCE = "sparsemax_attention"


@dataclass(frozen=True)
class Run:
    """One training run of the plan."""

    role: str
    kind: str
    setting: str
    expansion: int
    seed: int

    @property
    def id(self) -> str:
        return f"{self.role}/{self.kind}/{self.setting}/x{self.expansion}/s{self.seed}"


@dataclass
class Plan:
    """Runs with their evaluations, plus the runs whose guidance file is needed."""

    runs: dict[str, Run] = field(default_factory=dict)
    evals: dict[str, set[str]] = field(default_factory=dict)
    external: dict[str, dict] = field(default_factory=dict)  # run id -> its ``external`` config entry

    def add(self, run: Run, evals: list[str]) -> None:
        self.runs.setdefault(run.id, run)
        self.evals.setdefault(run.id, set()).update(evals)

    def guide_sources(self) -> list[Run]:
        """The sparsemax runs whose measured L0 guided runs read."""
        return [
            Run(r.role, GUIDE_SOURCE, SETTINGS_DEFAULT, r.expansion, r.seed)
            for r in self.runs.values()
            if r.setting == GUIDED
        ]


def parse_setting(setting: str) -> dict:
    """``"default"`` or ``"guided"`` → {}; ``"k=24"`` → {"k": 24}; ``"a=1e-3,b=2"`` → both (numbers parsed)."""
    if setting in (SETTINGS_DEFAULT, GUIDED):
        return {}
    out = {}
    for part in setting.split(","):
        key, sep, value = part.partition("=")
        if not sep or not key:
            raise ValueError(f"bad run setting {setting!r}: expected key=value[,key=value]")
        try:
            num = float(value)
            out[key] = int(num) if num.is_integer() and "e" not in value.lower() and "." not in value else num
        except ValueError:
            out[key] = value
    return out


def format_setting(key: str, value) -> str:
    return f"{key}={value:g}" if isinstance(value, float) else f"{key}={value}"


def canonical_setting(config: dict, kind: str, setting: str) -> str:
    """``setting``, or ``"default"`` when it only restates the kind's default hyperparameters (``k=32`` for a
    TopK whose default k is 32), so that one training run serves every experiment that asks for it."""
    if setting in (SETTINGS_DEFAULT, GUIDED):
        return setting
    defaults = config["hyperparameters"].get(kind, {})
    given = parse_setting(setting)
    return SETTINGS_DEFAULT if all(k in defaults and defaults[k] == v for k, v in given.items()) else setting


def make_plan(config: dict) -> Plan:
    """The runs and evaluations asked for by a validated config (see the module docstring); a setting that
    restates a kind's defaults is the ``default`` run (:func:`canonical_setting`)."""
    plan = Plan()
    for name, exp in experiment_entries(config):
        role, evals = exp["backbone"], exp["evals"]
        for seed in exp.get("seeds", config["train"]["seeds"]):
            if name == "size_sweep":
                for kind in exp["kinds"]:
                    for x in exp["expansions"]:
                        plan.add(Run(role, kind, SETTINGS_DEFAULT, x, seed), evals)
            elif name in ("ablation", "methods"):
                for kind in exp["kinds"]:
                    plan.add(Run(role, kind, SETTINGS_DEFAULT, exp["expansion"], seed), evals)
            elif name == "guidance":
                x = exp["expansion"]
                plan.add(Run(role, GUIDE_SOURCE, SETTINGS_DEFAULT, x, seed), evals)
                for kind in exp["kinds"]:
                    plan.add(Run(role, kind, GUIDED, x, seed), evals)
                    for k in exp["fixed_k"]:
                        setting = canonical_setting(config, kind, format_setting("k", k))
                        plan.add(Run(role, kind, setting, x, seed), evals)
            elif name == "pareto":
                x = exp["expansion"]
                plan.add(Run(role, GUIDE_SOURCE, SETTINGS_DEFAULT, x, seed), evals)  # the frontier's reference
                for kind, sweep in exp["sweeps"].items():
                    for key, values in sweep.items():
                        for v in values:
                            setting = canonical_setting(config, kind, format_setting(key, v))
                            plan.add(Run(role, kind, setting, x, seed), evals)
            else:
                raise ValueError(f"unknown experiment {name!r}")
    for entry in config.get("external") or ():
        run_id = external_run_id(entry["backbone"], entry["name"])
        plan.external[run_id] = entry
        plan.evals[run_id] = set(entry.get("evals") or ["reconstruction"])
    return plan


def external_run_id(role: str, name: str) -> str:
    """The run id of the ``external`` entry ``name`` on backbone ``role``: ``<role>/external/<name>``."""
    return f"{role}/{EXTERNAL}/{name}"


def experiment_entries(config: dict) -> list[tuple[str, dict]]:
    """(name, spec) of every enabled experiment but the synthetic benchmark; an experiment given as a list
    (``pareto`` on several backbones) contributes one entry per item."""
    out = []
    for name, exp in config["experiments"].items():
        if name == "synthetic":
            continue
        out += [(name, e) for e in (exp if isinstance(exp, list) else [exp]) if e.get("enabled", True)]
    return out


def learning_rate(config: dict, kind: str) -> float:
    """The training lr of ``kind``: ``train.lr_by_kind[kind]`` when given, else ``train.lr``."""
    return float(config["train"].get("lr_by_kind", {}).get(kind, config["train"]["lr"]))


def check_evals(key: str, evals, backbone: str) -> None:
    """Each of ``evals`` is a declared evaluation (:mod:`repro.evals.registry`) that applies to ``backbone``
    (lm_loss: a causal language model, :func:`repro.backbones.is_causal`); ValueError naming ``key``."""
    from repro.backbones import is_causal
    from repro.evals.registry import EVALUATIONS

    for e in evals or ():
        if e not in EVALUATIONS:
            raise ValueError(f"{key}: unknown evaluation {e!r}; declared: {', '.join(EVALUATIONS)}")
        if EVALUATIONS[e].causal_only and not is_causal(backbone):
            raise ValueError(f"{key}: {e} needs a causal language model; the backbone is {backbone}")


def check_config(config: dict) -> None:
    """Checks beyond the JSON schema, before any job runs (ValueError naming the key): registered backbone
    and dataset names, experiments on configured roles, declared evaluations that apply to the role's backbone
    (lm_loss only on causal language models), declared SAE kinds, the external SAEs, and every run's
    hyperparameters accepted by its SAE kind (with ``expansion`` × a nominal width)."""
    from repro.backbones import BACKBONES, PREFIXES
    from repro.data import DATASETS
    from repro.data import PREFIXES as DATA_PREFIXES
    from repro.sae import make_config

    for role, b in config["backbones"].items():
        if b["name"] not in BACKBONES and not b["name"].startswith(PREFIXES):
            raise ValueError(
                f"backbones.{role}.name: unknown backbone {b['name']!r}; registered: "
                f"{', '.join(BACKBONES)} (or {', '.join(p + '<...>' for p in PREFIXES)})"
            )
        if b["dataset"] not in DATASETS and not b["dataset"].startswith(DATA_PREFIXES):
            raise ValueError(
                f"backbones.{role}.dataset: unknown dataset {b['dataset']!r}; registered: {', '.join(DATASETS)}"
            )
    for name, exp in experiment_entries(config):
        role = exp["backbone"]
        if role not in config["backbones"]:
            raise ValueError(f"experiments.{name}.backbone: no backbone configured for role {role!r}")
        check_evals(f"experiments.{name}.evals", exp["evals"], config["backbones"][role]["name"])
    check_kinds(config)
    check_external(config)
    for run in make_plan(config).runs.values():
        try:
            make_config(run.kind, d_in=64, d_sae=64 * run.expansion, **hyperparameters(config, run))
        except (ValueError, TypeError) as e:
            raise ValueError(
                f"hyperparameters of run {run.id} (hyperparameters.{run.kind} and the setting {run.setting!r}): {e}"
            ) from None


def check_kinds(config: dict) -> None:
    """Every SAE kind the config names (experiment kinds, pareto sweeps, ``hyperparameters``,
    ``train.lr_by_kind``) is declared in :mod:`repro.kinds` (ValueError naming the key); the schema only
    checks their spelling, so that a new kind is its module and its catalogue entry."""
    from repro.kinds import CATALOGUE

    named = [(f"hyperparameters.{k}", k) for k in config.get("hyperparameters") or {}]
    named += [(f"train.lr_by_kind.{k}", k) for k in (config["train"].get("lr_by_kind") or {})]
    for name, exp in experiment_entries(config):
        named += [(f"experiments.{name}.kinds", k) for k in exp.get("kinds") or ()]
        named += [(f"experiments.{name}.sweeps.{k}", k) for k in exp.get("sweeps") or {}]
    for key, kind in named:
        if kind not in CATALOGUE:
            raise ValueError(f"{key}: unknown SAE kind {kind!r}; declared (repro/kinds.py): {', '.join(CATALOGUE)}")


def check_external(config: dict) -> None:
    """Each ``external`` entry: a unique name, a configured role, an SAELens folder whose architecture and
    normalisation some kind of ours computes (:func:`repro.interop.saelens_import.read_config`), and lm_loss only on
    a causal language model (ValueError naming the entry)."""
    from repro.interop.saelens_import import NotImportable, importable_kind, read_config

    seen = set()
    for i, entry in enumerate(config.get("external") or ()):
        key = f"external[{i}] ({entry['name']})"
        if entry["name"] in seen:
            raise ValueError(f"{key}.name: {entry['name']!r} is used twice")
        seen.add(entry["name"])
        role = entry["backbone"]
        if role not in config["backbones"]:
            raise ValueError(f"{key}.backbone: no backbone configured for role {role!r}")
        check_evals(f"{key}.evals", entry.get("evals"), config["backbones"][role]["name"])
        try:
            importable_kind(read_config(entry["path"]))
        except NotImportable as e:
            raise ValueError(f"{key}.path: {e}") from None


def hyperparameters(config: dict, run: Run) -> dict:
    """The SAE hyperparameters of ``run``: the kind's defaults from the config, overridden by its setting."""
    return {**config["hyperparameters"].get(run.kind, {}), **parse_setting(run.setting)}


def run_dir(config: dict, run: Run) -> Path:
    return Path(config["runs_root"]) / run.id
