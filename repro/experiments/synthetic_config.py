"""The ground-truth benchmark's config (:mod:`repro.experiments.synthetic`): :class:`SyntheticConfig` validated
from its mapping (a ValueError naming the offending key), its :class:`Method` rows, the symbolic hyperparameters
(``k`` from the mean true count, ``match_l0`` penalties) and the config as recorded in ``results.json``."""

from __future__ import annotations

from dataclasses import dataclass, field

from repro.sae import KINDS
from repro.synthetic import SyntheticSpec

# Symbolic values of ``k`` (TopK family) resolved from the data's mean true count.
K_RULES = {"mean": 1.0, "half": 0.5, "double": 2.0}
MATCH_L0 = "match_l0"


@dataclass(frozen=True)
class Method:
    """One row of the benchmark: a display name, an SAE kind and its hyperparameters. ``k`` may be
    ``mean``/``half``/``double`` (times the mean true count, rounded); a penalty set to ``match_l0`` is
    searched so that the trained SAE's mean L0 lands at the mean true count."""

    name: str
    kind: str
    hparams: dict = field(default_factory=dict)


@dataclass(frozen=True)
class SyntheticConfig:
    """The experiment: data spec, dictionary size, training settings, evaluation size, seeds, methods."""

    data: SyntheticSpec
    d_sae: int
    steps: int
    batch_size: int
    lr: float
    warmup_steps: int
    eval_tokens: int
    seeds: tuple[int, ...]
    methods: tuple[Method, ...]
    search_steps: int = 6
    step_sweep: tuple[int, ...] = ()

    @staticmethod
    def from_dict(raw: dict) -> SyntheticConfig:
        """Validate a config mapping (e.g. parsed YAML); raise ValueError naming the offending key."""
        known = {"data", "d_sae", "train", "eval_tokens", "seeds", "methods", "search_steps", "step_sweep"}
        unknown = sorted(set(raw) - known)
        if unknown:
            raise ValueError(f"unknown config key(s): {', '.join(unknown)}; known: {', '.join(sorted(known))}")
        for key in ("data", "d_sae", "train", "seeds", "methods"):
            if key not in raw:
                raise ValueError(f"config key {key!r} is missing")
        try:
            data = SyntheticSpec.from_dict(raw["data"])
        except (TypeError, ValueError) as e:
            raise ValueError(f"config key 'data': {e}") from None
        train_raw = dict(raw["train"])
        train_keys = {"steps", "batch_size", "lr", "warmup_steps"}
        if set(train_raw) != train_keys:
            raise ValueError(
                f"config key 'train' must have exactly {', '.join(sorted(train_keys))}; "
                f"got {', '.join(sorted(train_raw))}"
            )
        methods = []
        for i, m in enumerate(raw["methods"]):
            if not isinstance(m, dict) or set(m) - {"name", "kind", "hparams"} or "kind" not in m:
                raise ValueError(f"config key methods[{i}] must be a mapping with kind, optional name and hparams")
            if m["kind"] not in KINDS:
                raise ValueError(f"config key methods[{i}].kind={m['kind']!r}: unknown; known: {', '.join(KINDS)}")
            methods.append(Method(m.get("name", m["kind"]), m["kind"], dict(m.get("hparams") or {})))
        names = [m.name for m in methods]
        if len(set(names)) != len(names):
            raise ValueError("config key 'methods': method names must be unique")
        cfg = SyntheticConfig(
            data=data,
            d_sae=int(raw["d_sae"]),
            steps=int(train_raw["steps"]),
            batch_size=int(train_raw["batch_size"]),
            lr=float(train_raw["lr"]),
            warmup_steps=int(train_raw["warmup_steps"]),
            eval_tokens=int(raw.get("eval_tokens", 16384)),
            seeds=tuple(int(s) for s in raw["seeds"]),
            methods=tuple(methods),
            search_steps=int(raw.get("search_steps", 6)),
            step_sweep=tuple(int(s) for s in raw.get("step_sweep") or ()),
        )
        if any(s < 1 for s in cfg.step_sweep):
            raise ValueError(f"config key step_sweep={list(cfg.step_sweep)}: step counts must be positive")
        for key, value in (
            ("d_sae", cfg.d_sae),
            ("train.steps", cfg.steps),
            ("train.batch_size", cfg.batch_size),
            ("eval_tokens", cfg.eval_tokens),
            ("search_steps", cfg.search_steps),
        ):
            if value < 1:
                raise ValueError(f"config key {key}={value}: must be positive")
        if not cfg.seeds:
            raise ValueError("config key 'seeds' must list at least one seed")
        return cfg


def resolve_hparams(method: Method, mean_count: float, d_sae: int) -> dict:
    """Hyperparameters with symbolic ``k`` values resolved (``match_l0`` penalties are left to the search)."""
    hp = dict(method.hparams)
    if isinstance(hp.get("k"), str):
        if hp["k"] not in K_RULES:
            raise ValueError(f"method {method.name}: k={hp['k']!r}; use a number or one of {', '.join(K_RULES)}")
        hp["k"] = int(min(d_sae, max(1, round(K_RULES[hp["k"]] * mean_count))))
    return hp


def config_record(cfg: SyntheticConfig) -> dict:
    """The config as plain JSON."""
    return {
        "data": cfg.data.to_dict(),
        "d_sae": cfg.d_sae,
        "train": {"steps": cfg.steps, "batch_size": cfg.batch_size, "lr": cfg.lr, "warmup_steps": cfg.warmup_steps},
        "eval_tokens": cfg.eval_tokens,
        "seeds": list(cfg.seeds),
        "search_steps": cfg.search_steps,
        "step_sweep": list(cfg.step_sweep),
        "methods": [{"name": m.name, "kind": m.kind, "hparams": m.hparams} for m in cfg.methods],
    }
