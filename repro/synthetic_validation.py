"""The validation of a :class:`repro.synthetic.SyntheticSpec`: every field checked, a ValueError naming the
field and what it expects otherwise."""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    from repro.synthetic_spec import SyntheticSpec

_COUNT_KEYS = {
    "fixed": {"k"},
    "uniform": {"low", "high"},
    "mixture": {"simple", "complex", "p_complex"},
    "heavy": {"alpha", "max"},
}
_MAGNITUDE_KEYS = {"uniform": {"low", "high"}, "lognormal": {"mu", "sigma"}, "exponential": {"scale"}}


def _fail(name: str, value: Any, expected: str) -> None:
    raise ValueError(f"invalid SyntheticSpec {name}={value!r}: expected {expected}")


def _is_int(v: Any) -> bool:
    return isinstance(v, (int, np.integer)) and not isinstance(v, bool)


def _is_num(v: Any) -> bool:
    return isinstance(v, (int, float, np.integer, np.floating)) and not isinstance(v, bool) and math.isfinite(v)


def _law(name: str, value: Any, table: dict[str, set[str]]) -> dict:
    """A copy of a ``{"kind": ..., ...}`` law with exactly the keys of its kind (else ValueError)."""
    if not isinstance(value, dict) or value.get("kind") not in table:
        _fail(name, value, f"a dict with 'kind' one of {', '.join(table)}")
    keys = table[value["kind"]]
    if set(value) != keys | {"kind"}:
        _fail(name, value, f"kind {value['kind']!r} with exactly the keys {', '.join(sorted(keys))}")
    return dict(value)


def checked_fields(spec: SyntheticSpec) -> tuple[dict, dict, dict | None]:
    """Check every field of ``spec`` (ValueError naming the first bad one); return copies of its ``counts``,
    ``magnitude`` and ``hierarchy``."""
    if not (_is_int(spec.d_in) and spec.d_in > 0):
        _fail("d_in", spec.d_in, "a positive integer")
    if not (_is_int(spec.n_features) and spec.n_features > 0):
        _fail("n_features", spec.n_features, "a positive integer")
    n = spec.n_features
    counts = _law("counts", spec.counts, _COUNT_KEYS)
    kind = counts["kind"]
    ints = {"fixed": ("k",), "uniform": ("low", "high"), "mixture": ("simple", "complex"), "heavy": ("max",)}
    for key in ints[kind]:
        if not (_is_int(counts[key]) and 1 <= counts[key] <= n):
            _fail(f"counts.{key}", counts[key], f"an integer in 1..n_features={n}")
    if kind == "uniform" and counts["low"] > counts["high"]:
        _fail("counts.high", counts["high"], f"an integer >= counts.low={counts['low']}")
    if kind == "mixture" and not (_is_num(counts["p_complex"]) and 0 <= counts["p_complex"] <= 1):
        _fail("counts.p_complex", counts["p_complex"], "a probability in [0, 1]")
    if kind == "heavy" and not (_is_num(counts["alpha"]) and counts["alpha"] > 0):
        _fail("counts.alpha", counts["alpha"], "a finite number > 0")
    magnitude = _law("magnitude", spec.magnitude, _MAGNITUDE_KEYS)
    mk = magnitude["kind"]
    if mk == "uniform":
        if not (_is_num(magnitude["low"]) and magnitude["low"] > 0):
            _fail("magnitude.low", magnitude["low"], "a finite number > 0 (magnitudes are strictly positive)")
        if not (_is_num(magnitude["high"]) and magnitude["high"] >= magnitude["low"]):
            _fail("magnitude.high", magnitude["high"], f"a finite number >= magnitude.low={magnitude['low']}")
    elif mk == "lognormal":
        if not _is_num(magnitude["mu"]):
            _fail("magnitude.mu", magnitude["mu"], "a finite number")
        if not (_is_num(magnitude["sigma"]) and magnitude["sigma"] >= 0):
            _fail("magnitude.sigma", magnitude["sigma"], "a finite number >= 0")
    elif not (_is_num(magnitude["scale"]) and magnitude["scale"] > 0):
        _fail("magnitude.scale", magnitude["scale"], "a finite number > 0")
    if not (_is_num(spec.correlation) and 0 <= spec.correlation < 1):
        _fail("correlation", spec.correlation, "a number in [0, 1)")
    hierarchy = spec.hierarchy
    if hierarchy is not None:
        if (
            not isinstance(hierarchy, dict)
            or not {"parents", "children_per_parent"} <= set(hierarchy)
            or not set(hierarchy) <= {"parents", "children_per_parent", "parent_weight"}
        ):
            _fail("hierarchy", hierarchy, "None or {'parents': P, 'children_per_parent': C[, 'parent_weight': w]}")
        hierarchy = dict(hierarchy)
        for key in ("parents", "children_per_parent"):
            if not (_is_int(hierarchy[key]) and hierarchy[key] >= 1):
                _fail(f"hierarchy.{key}", hierarchy[key], "a positive integer")
        if hierarchy["parents"] * (1 + hierarchy["children_per_parent"]) > n:
            _fail("hierarchy", spec.hierarchy, f"parents * (1 + children_per_parent) <= n_features={n}")
        weight = hierarchy.get("parent_weight", 1.0)
        if not (_is_num(weight) and weight >= 0):
            _fail("hierarchy.parent_weight", weight, "a finite number >= 0")
    for name in ("noise", "noise_decay", "offset"):
        value = getattr(spec, name)
        if not (_is_num(value) and value >= 0):
            _fail(name, value, "a finite number >= 0")
    if not _is_int(spec.seed):
        _fail("seed", spec.seed, "an integer")
    if not (_is_int(spec.n_groups) and 1 <= spec.n_groups <= n):
        _fail("n_groups", spec.n_groups, f"an integer in 1..n_features={n}")
    return counts, magnitude, hierarchy
