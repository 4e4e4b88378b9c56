"""``repro audit``: our aggregated results against the paper's recovered numbers and claims.

Input: the tidy CSV of ``repro.report.aggregate`` (:data:`COLUMNS`), one row per (run, eval, metric).
Reference: ``reference.yaml`` next to this module (:func:`load_reference`): the paper's recovered numbers,
each second-hand (source [PN], not checked against the PDF) with its caveats, tolerances and claims.

Definitions.

- Seed mean: rows with a finite ``value`` are averaged per (config, backbone, dataset, hook, kind, expansion,
  setting, eval, metric) and seed (runs of the same seed first), then over seeds; ``n_seeds`` = number of
  seeds averaged. Missing or NaN values are dropped, never read as 0.
- Cell (one paper number): our seed mean for the cell's (backbone, dataset, kind, expansion, setting, eval,
  metric). The cell is comparable only when our data has the cell's backbone and dataset; then
  ``delta`` = ours − paper and the verdict is "reproduced" iff |delta| ≤ max(absolute, relative · |paper|)
  (the cell's tolerance, from the YAML), else "not reproduced"; "no data" when that run is missing. Without
  the paper's backbone and dataset the verdict is "not comparable" and ``ours`` shows the closest analogue:
  the same kind and metric, preferring the same modality, backbone, dataset, the nearest expansion (in
  log₂), the paper's hook and more seeds, in this order; the reason names it.
- Range (Food101 TopK/BatchTopK K = 24/32, only the range 0.99–8.64 known): "reproduced" iff every fixed-K
  value of ours lies strictly below our sparsemax_attention value (the relation the range supports);
  whether ours fall inside the range is reported, not judged.
- Claim (a relation): evaluated separately in every (config, backbone, dataset, hook) group of the claim's
  modality that has data for it, whatever the config (a relation applies to the offline analogue too);
  strict inequalities at every expansion present; ``delta`` = the worst-case margin (> 0 iff the relation
  holds); "no data" when nothing can be compared. ``comparable`` is True for groups on the paper's setup.
- Gates (claims): a claim that holds or fails is "inconclusive" when a run it compares did not converge
  (eval ``train``, metric ``converged``), a top-n setup it reads failed its gate (``gate_usable``), or the
  compared values' spreads overlap (mean ± std over seeds; with one seed the ``<metric>_ci_lo/_hi``
  bootstrap interval over examples; no spread known: not gated). The reason names the failed gate.
- :func:`strict_failures`: the rows whose verdict is "not reproduced".

Rows (:func:`run_audit`): {"item", "paper", "ours", "delta", "verdict", "reason", "n_seeds"} plus "id",
"type" ("cell" | "range" | "claim"), "comparable", "group" (claims) and "caveats".
"""

from __future__ import annotations

import json
import math
import os
import re
import tempfile
from collections.abc import Callable, Iterable
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import yaml

from repro.report import metrics_csv

COLUMNS = metrics_csv.COLUMNS
KEYS = ["config", "backbone", "dataset", "hook", "kind", "expansion", "setting", "eval", "metric"]
GROUP = ["config", "backbone", "dataset", "hook"]
VERDICTS = ("reproduced", "not reproduced", "inconclusive", "not comparable", "no data")
TABLE_COLUMNS = ("claim or cell", "paper", "ours", "delta", "verdict", "reason")


# ----- reference and input ---------------------------------------------------------------------------------
def load_reference(path: str | Path | None = None) -> dict:
    """The paper reference (``reference.yaml`` of this package, or ``path``) as a dict with keys ``paper``,
    ``sources``, ``caveats``, ``tolerances``, ``modalities``, ``setting_aliases``, ``cells``, ``ranges``,
    ``claims``; YAML merge keys are resolved, so every cell carries all its fields."""
    if path is None:
        text = resources.files("repro.audit").joinpath("reference.yaml").read_text(encoding="utf-8")
    else:
        text = Path(path).read_text(encoding="utf-8")
    ref = yaml.safe_load(text)
    missing = [k for k in ("sources", "caveats", "tolerances", "cells", "claims") if k not in (ref or {})]
    if missing:
        raise ValueError(f"reference {path or 'reference.yaml'} lacks the keys: {', '.join(missing)}")
    return ref


def validate_metrics(metrics: pd.DataFrame, source: str = "metrics") -> pd.DataFrame:
    """A checked, normalised copy of a tidy metrics frame (:func:`repro.report.metrics_csv.normalise`)."""
    return metrics_csv.normalise(metrics, source)


def read_metrics(csv_path: str | Path) -> pd.DataFrame:
    """The tidy metrics CSV at ``csv_path``, normalised (:func:`repro.report.metrics_csv.read`); a missing, empty
    or unreadable file or missing columns raise ValueError naming the file."""
    return metrics_csv.read(csv_path)


def aggregate(metrics: pd.DataFrame) -> pd.DataFrame:
    """Seed means of a validated frame: one row per :data:`KEYS` with ``value`` (mean over seeds of the
    per-seed mean), ``std`` (over seeds, NaN for one), ``n_seeds`` and ``d_sae``; non-finite values dropped."""
    df = metrics[metrics["value"].map(lambda v: math.isfinite(v))]
    cols = KEYS + ["value", "std", "n_seeds", "d_sae"]
    if df.empty:
        return pd.DataFrame(columns=cols)
    per_seed = df.groupby(KEYS + ["seed"], dropna=False, sort=True).agg(
        value=("value", "mean"), d_sae=("d_sae", "first")
    )
    out = per_seed.groupby(KEYS, dropna=False, sort=True).agg(
        value=("value", "mean"), std=("value", "std"), n_seeds=("value", "size"), d_sae=("d_sae", "first")
    )
    out = out.reset_index()
    out["n_seeds"] = out["n_seeds"].astype(int)
    return out[cols]


# ----- helpers ---------------------------------------------------------------------------------------------
def _modality(ref: dict, backbone: str, dataset: str) -> str | None:
    mods = ref.get("modalities") or {}
    for key, name in (("backbones", backbone), ("datasets", dataset)):
        for mod, spec in mods.items():
            if name in (spec or {}).get(key, []):
                return mod
    return None


def _tolerance(ref: dict, name: str, paper: float) -> tuple[float, str]:
    t = ref["tolerances"][name]
    rel, ab = float(t.get("relative") or 0.0), float(t.get("absolute") or 0.0)
    desc = f"max({rel:.0%} of paper, {ab:g})" if rel else f"±{ab:g} absolute"
    return max(ab, rel * abs(paper)), desc


def _num(v: Any) -> str:
    return "–" if v is None or (isinstance(v, float) and math.isnan(v)) else f"{v:.4g}"


def _where(agg: pd.DataFrame, **eq: Any) -> pd.DataFrame:
    mask = np.ones(len(agg), dtype=bool)
    for k, v in eq.items():
        col = agg[k].to_numpy()
        if k == "expansion":
            mask &= np.abs(col.astype(float) - float(v)) < 1e-6
        elif isinstance(v, (list, tuple, set)):
            mask &= np.isin(col, list(v))
        else:
            mask &= col == v
    return agg.iloc[np.flatnonzero(mask)]


def _where_setting(agg: pd.DataFrame, setting: str, ref: dict, **eq: Any) -> pd.DataFrame:
    """Rows at ``setting``, or at its alias (``setting_aliases``) when the setting itself is absent."""
    rows = _where(agg, setting=setting, **eq)
    alias = (ref.get("setting_aliases") or {}).get(setting)
    return rows if not rows.empty or alias is None else _where(agg, setting=alias, **eq)


def _where_setup(agg: pd.DataFrame, backbone: str, dataset: str) -> pd.DataFrame:
    return agg[(agg["backbone"] == backbone) & (agg["dataset"] == dataset)]


def _best(rows: pd.DataFrame, key: Callable[[pd.Series], tuple]) -> pd.Series | None:
    return None if rows.empty else min((r for _, r in rows.iterrows()), key=key)


def _where_txt(r: pd.Series, configs: int) -> str:
    cfg = f", config {r['config'] or '(none)'}" if configs > 1 else ""
    return f"{r['backbone']}/{r['dataset']} ({r['hook']}{cfg})"


def _setups(rows: pd.DataFrame) -> str:
    pairs = sorted({(b, d) for b, d in zip(rows["backbone"], rows["dataset"], strict=True)})
    return ", ".join(f"{b} on {d}" for b, d in pairs)


def _row(
    item: str, paper: Any, ours: Any, delta: float | None, verdict: str, reason: str, n_seeds: int, **extra: Any
) -> dict:
    return {
        "item": item,
        "paper": paper,
        "ours": ours,
        "delta": None if delta is None else float(delta),
        "verdict": verdict,
        "reason": reason,
        "n_seeds": int(n_seeds),
    } | extra


# ----- cells -----------------------------------------------------------------------------------------------
def _analogue(agg: pd.DataFrame, ref: dict, spec: dict, kind: str, metric: str, setting: str) -> pd.Series | None:
    """Closest analogue of a paper cell in our data (see the module docstring for the preference order)."""
    rows = _where_setting(agg, setting, ref, kind=kind, eval=spec["eval"], metric=metric)
    mod = _modality(ref, spec["backbone"], spec["dataset"])
    e0 = float(spec["expansion"])

    def key(r: pd.Series) -> tuple:
        e = float(r["expansion"]) if r["expansion"] > 0 else e0
        return (
            _modality(ref, r["backbone"], r["dataset"]) != mod,
            r["backbone"] != spec["backbone"],
            r["dataset"] != spec["dataset"],
            abs(math.log2(e / e0)),
            r["hook"] != spec.get("hook"),
            -r["n_seeds"],
            r["config"],
            r["backbone"],
            r["dataset"],
            r["hook"],
        )

    return _best(rows, key)


def _analogue_txt(r: pd.Series | None, spec: dict, configs: int) -> str:
    if r is None:
        return f"no analogue in our data ({spec['kind']}, {spec['eval']}/{spec['metric']})"
    e = "" if abs(r["expansion"] - spec["expansion"]) < 1e-6 else f" (nearest to {spec['expansion']:g})"
    return (
        f"ours is the closest analogue: {r['kind']} at expansion {r['expansion']:g}{e}, setting {r['setting']}, "
        f"on {_where_txt(r, configs)}"
    )


def _mismatch(spec: dict, at_eval: pd.DataFrame) -> str:
    what = "dataset" if spec["backbone"] in set(at_eval["backbone"]) else "backbone"
    return f"different {what}: ours {_setups(at_eval)}, paper {spec['backbone']} on {spec['dataset_name']}"


def _caveat_note(spec: dict) -> str:
    extra = [c for c in spec.get("caveats", []) if c in ("zigzag", "range_only")]
    return f"; caveat: {', '.join(extra)} (see header)" if extra else ""


def _audit_cell(spec: dict, agg: pd.DataFrame, ref: dict) -> dict:
    """One paper number against our seed mean (module docstring)."""
    paper, configs = float(spec["paper"]), agg["config"].nunique()
    tol, tol_desc = _tolerance(ref, spec["tolerance"], paper)
    extra = {"id": spec["id"], "type": "cell", "comparable": False, "caveats": list(spec.get("caveats", []))}
    base = dict(kind=spec["kind"], eval=spec["eval"], metric=spec["metric"])
    if _where_setup(agg, spec["backbone"], spec["dataset"]).empty:
        at_eval = agg[agg["eval"] == spec["eval"]]
        ana = _analogue(agg, ref, spec, spec["kind"], spec["metric"], spec["setting"])
        ours = None if ana is None else float(ana["value"])
        if at_eval.empty:
            return _row(
                spec["item"], paper, ours, None, "no data", f"no {spec['eval']} results in our data", 0, **extra
            )
        reason = f"{_mismatch(spec, at_eval)}; {_analogue_txt(ana, spec, configs)}"
        return _row(
            spec["item"],
            paper,
            ours,
            None,
            "not comparable",
            reason + _caveat_note(spec),
            0 if ana is None else ana["n_seeds"],
            **extra,
        )
    extra["comparable"] = True
    setup = _where_setup(agg, spec["backbone"], spec["dataset"])
    exact = _where_setting(setup, spec["setting"], ref, expansion=spec["expansion"], **base)
    r = _best(exact, lambda r: (r["hook"] != spec.get("hook"), -r["n_seeds"], r["config"], r["hook"]))
    if r is None:
        have = sorted(set(_where(setup, **base)["expansion"]))
        ana = _analogue(agg, ref, spec, spec["kind"], spec["metric"], spec["setting"])
        reason = (
            f"no run of kind {spec['kind']} at expansion {spec['expansion']:g} (setting {spec['setting']}) "
            f"with {spec['eval']}/{spec['metric']} on {spec['backbone']}/{spec['dataset']}"
            + (f" (expansions present: {', '.join(f'{e:g}' for e in have)})" if have else "")
            + f"; {_analogue_txt(ana, spec, configs)}"
        )
        return _row(
            spec["item"], paper, None if ana is None else float(ana["value"]), None, "no data", reason, 0, **extra
        )
    ours = float(r["value"])
    delta = ours - paper
    ok = abs(delta) <= tol
    reason = (
        f"|delta| {abs(delta):.3g} {'≤' if ok else '>'} tolerance {tol:.3g} ({tol_desc}); "
        f"ours on {_where_txt(r, configs)}"
    )
    if r["hook"] != spec.get("hook"):
        reason += f", paper hook {spec.get('hook')}"
    if spec.get("protocol") == "official":
        held = _where(
            setup,
            kind=spec["kind"],
            eval=spec["eval"],
            expansion=r["expansion"],
            setting=r["setting"],
            hook=r["hook"],
            config=r["config"],
            metric=spec["metric"].replace("official/", "heldout/"),
        )
        if not held.empty:
            reason += f"; heldout protocol: {held['value'].iloc[0]:.4g}"
    return _row(
        spec["item"],
        paper,
        ours,
        delta,
        "reproduced" if ok else "not reproduced",
        reason + _caveat_note(spec),
        r["n_seeds"],
        **extra,
    )


def _fixed_values(rows: pd.DataFrame, spec: dict, ref: dict) -> list[tuple[str, pd.Series]]:
    out = []
    for kind in spec["kinds"]:
        for s in spec["settings"]:
            hit = _where_setting(rows, s, ref, kind=kind)
            if not hit.empty:
                out.append((f"{kind} {s}" + (" (default)" if hit["setting"].iloc[0] != s else ""), hit.iloc[0]))
    return out


def _audit_range(spec: dict, agg: pd.DataFrame, ref: dict) -> dict:
    """The Food101 fixed-K range, checked as a relation to our sparsemax value (module docstring)."""
    lo, hi = spec["paper_range"]
    paper = f"{lo:g}–{hi:g} (all below {spec['reference_kind']} {spec['reference_paper']:g})"
    extra = {"id": spec["id"], "type": "range", "comparable": False, "caveats": list(spec.get("caveats", []))}
    rows = _where(agg, eval=spec["eval"], metric=spec["metric"])
    configs = agg["config"].nunique()
    groups = []
    for key, g in rows.groupby(GROUP + ["expansion"], sort=True):
        target = _where_setting(g, spec["reference_setting"], ref, kind=spec["reference_kind"])
        fixed = _fixed_values(g, spec, ref)
        if not target.empty and fixed:
            groups.append((key, target.iloc[0], fixed))
    mod = _modality(ref, spec["backbone"], spec["dataset"])

    def pref(item: tuple) -> tuple:
        (cfg, bb, ds, hook, e), _, fixed = item
        return (
            _modality(ref, bb, ds) != mod,
            bb != spec["backbone"],
            ds != spec["dataset"],
            abs(math.log2(max(e, 1e-9) / spec["expansion"])),
            hook != spec.get("hook"),
            -len(fixed),
            cfg,
        )

    comparable = not _where_setup(agg, spec["backbone"], spec["dataset"]).empty
    cands = [g for g in groups if not comparable or (g[0][1], g[0][2]) == (spec["backbone"], spec["dataset"])]
    if not cands:
        why = (
            f"no {spec['reference_kind']} and fixed-K {'/'.join(spec['kinds'])} ({', '.join(spec['settings'])}) "
            f"{spec['metric']} on the same backbone/dataset/expansion"
        )
        if comparable:
            return _row(
                spec["item"],
                paper,
                None,
                None,
                "no data",
                why + f" ({spec['backbone']}/{spec['dataset']})",
                0,
                **extra | {"comparable": True},
            )
        at_eval = agg[agg["eval"] == spec["eval"]]
        verdict = "not comparable" if not at_eval.empty else "no data"
        setups = _mismatch(spec, at_eval) if not at_eval.empty else f"no {spec['eval']} results in our data"
        return _row(spec["item"], paper, None, None, verdict, f"{setups}; {why}", 0, **extra)
    (cfg, bb, ds, hook, e), target, fixed = min(cands, key=pref)
    t = float(target["value"])
    margin = t - max(float(r["value"]) for _, r in fixed)
    inside = sum(lo <= float(r["value"]) <= hi for _, r in fixed)
    ours = "; ".join(f"{name} {r['value']:.4g}" for name, r in fixed) + f"; {spec['reference_kind']} {t:.4g}"
    n = min([int(target["n_seeds"])] + [int(r["n_seeds"]) for _, r in fixed])
    rel = (
        f"relation {'holds' if margin > 0 else 'fails'}: fixed-K max {t - margin:.4g} vs "
        f"{spec['reference_kind']} {t:.4g} (margin {margin:+.4g}); {inside} of {len(fixed)} inside the paper's "
        f"range {lo:g}–{hi:g} (not judged); at expansion {e:g} on {_where_txt(target, configs)}"
    )
    if not comparable:
        reason = f"{_mismatch(spec, agg[agg['eval'] == spec['eval']])}; analogue: {rel}"
        return _row(spec["item"], paper, ours, None, "not comparable", reason, n, **extra)
    return _row(
        spec["item"],
        paper,
        ours,
        margin,
        "reproduced" if margin > 0 else "not reproduced",
        rel + _caveat_note(spec),
        n,
        **extra | {"comparable": True},
    )


# ----- claims ----------------------------------------------------------------------------------------------
Check = tuple[bool | None, str, float | None, int, str]  # holds, ours, margin, n_seeds, notes


def _at(g: pd.DataFrame, kind: str, e: float, metric: str, setting: str, ref: dict) -> pd.Series | None:
    hit = _where_setting(g, setting, ref, kind=kind, expansion=e, metric=metric)
    return None if hit.empty else hit.iloc[0]


def _interval(full: pd.DataFrame, row: pd.Series, ref: dict) -> tuple[float, float] | None:
    """The spread of a seed mean: mean ± std over seeds when there are several, else the bootstrap interval
    over examples (``<metric>_ci_lo``/``_ci_hi`` rows of the same run), else None (nothing known)."""
    if int(row["n_seeds"]) > 1 and math.isfinite(float(row["std"])):
        return float(row["value"]) - float(row["std"]), float(row["value"]) + float(row["std"])
    bounds = [
        _at(full, row["kind"], row["expansion"], f"{row['metric']}_ci_{b}", row["setting"], ref) for b in ("lo", "hi")
    ]
    if any(b is None for b in bounds):
        return None
    return float(bounds[0]["value"]), float(bounds[1]["value"])


def _overlap_gate(full: pd.DataFrame, a: pd.Series, b: pd.Series, ref: dict, label: str) -> str | None:
    """A failed-gate reason when the spreads of ``a`` and ``b`` are both known and overlap, else None (a
    comparison without any spread, such as the paper's own single numbers, is not gated)."""
    ia, ib = _interval(full, a, ref), _interval(full, b, ref)
    if ia is None or ib is None:
        return None
    if ia[0] <= ib[1] and ib[0] <= ia[1]:
        return (
            f"{label}: spreads overlap ({a['kind']} [{ia[0]:.4g}, {ia[1]:.4g}] vs {b['kind']} "
            f"[{ib[0]:.4g}, {ib[1]:.4g}])"
        )
    return None


def _finish(parts: list[str], margins: list[float], seeds: list[int], notes: list[str]) -> Check:
    if not margins:
        return None, "; ".join(parts) or "–", None, 0, "; ".join(notes) or "nothing to compare"
    return min(margins) > 0, "; ".join(parts), min(margins), min(seeds), "; ".join(notes)


def _check_extreme(
    g: pd.DataFrame,
    claim: dict,
    ref: dict,
    metrics: list[str],
    lower: bool,
    full: pd.DataFrame | None = None,
    gates: list[str] | None = None,
) -> Check:
    """``lowest`` (lower is better, one metric) or ``beats`` (higher is better, every metric given). With
    ``full`` (the group's rows of every metric), a comparison whose spreads overlap is added to ``gates``."""
    parts, margins, seeds, notes = [], [], [], []
    setting, target = claim["setting"], claim["target"]
    for e in sorted(set(g["expansion"])):
        for m in metrics:
            t = _at(g, target, e, m, setting, ref)
            comp = {k: r for k in claim["others"] if (r := _at(g, k, e, m, setting, ref)) is not None}
            if t is None:
                if comp:
                    notes.append(f"no {target} at ×{e:g}" + (f" {m}" if len(metrics) > 1 else ""))
                continue
            if claim.get("density_matched"):
                l0 = {k: _at(g, k, e, claim["l0_metric"], setting, ref) for k in [target, *comp]}
                if l0[target] is None:
                    notes.append(f"no {claim['l0_metric']} for {target} at ×{e:g}")
                    continue
                dense = {k: r for k, r in comp.items() if l0[k] is not None and l0[k]["value"] >= l0[target]["value"]}
                sparser = sorted(set(comp) - set(dense))
                if sparser:
                    notes.append(
                        f"×{e:g}: excluded as sparser than {target} (L0 {l0[target]['value']:.4g}): "
                        + ", ".join(sparser)
                    )
                comp = dense
            if not comp:
                notes.append(f"×{e:g}: no baseline to compare")
                continue
            absent = [k for k in claim["others"] if k not in comp and not claim.get("density_matched")]
            if absent:
                notes.append(f"×{e:g}: no {', '.join(absent)}")
            best = (min if lower else max)(comp, key=lambda k: comp[k]["value"])
            b, v = float(comp[best]["value"]), float(t["value"])
            margins.append(b - v if lower else v - b)
            seeds += [int(t["n_seeds"])] + [int(r["n_seeds"]) for r in comp.values()]
            label = f"×{e:g}" + (f" {m.split('/')[-1]}" if len(metrics) > 1 else "")
            if full is not None and gates is not None and (gate := _overlap_gate(full, t, comp[best], ref, label)):
                gates.append(gate)
            parts.append(f"{label}: {v:.4g} vs {best} {b:.4g}")
    return _finish(parts, margins, seeds, notes)


def _check_guided(
    g: pd.DataFrame, claim: dict, ref: dict, full: pd.DataFrame | None = None, gates: list[str] | None = None
) -> Check:
    """``guided_beats_fixed``: the guided setting beats every fixed setting present, per kind and expansion;
    with ``full``, a comparison whose seed spreads overlap is added to ``gates`` (C6 judged with its spread)."""
    parts, margins, seeds, notes = [], [], [], []
    for kind in claim["kinds"]:
        done = False
        for e in sorted(set(g["expansion"])):
            gd = _at(g, kind, e, claim["metric"], claim["guided_setting"], ref)
            fixed = {
                s: r for s in claim["fixed_settings"] if (r := _at(g, kind, e, claim["metric"], s, ref)) is not None
            }
            if gd is None or not fixed:
                continue
            done = True
            missing = [s for s in claim["fixed_settings"] if s not in fixed]
            if missing:
                notes.append(f"{kind} ×{e:g}: no {', '.join(missing)}")
            for s, r in fixed.items():
                margins.append(float(gd["value"]) - float(r["value"]))
                seeds += [int(gd["n_seeds"]), int(r["n_seeds"])]
                if (
                    full is not None
                    and gates is not None
                    and (gate := _overlap_gate(full, gd, r, ref, f"{kind} ×{e:g} guided vs {s}"))
                ):
                    gates.append(gate)
            parts.append(
                f"{kind} ×{e:g}: guided {gd['value']:.4g} vs "
                + ", ".join(
                    f"{s}{' (default)' if r['setting'] != s else ''} {r['value']:.4g}" for s, r in fixed.items()
                )
            )
        if not done:
            notes.append(f"no guided and fixed-K {kind} pair")
    return _finish(parts, margins, seeds, notes)


def _check_spread(g: pd.DataFrame, claim: dict, ref: dict) -> Check:
    """``spread``: metric_high > metric_low for the target at every expansion."""
    parts, margins, seeds, notes = [], [], [], []
    for e in sorted(set(g["expansion"])):
        lo = _at(g, claim["target"], e, claim["metric_low"], claim["setting"], ref)
        hi = _at(g, claim["target"], e, claim["metric_high"], claim["setting"], ref)
        if lo is None or hi is None:
            continue
        margins.append(float(hi["value"]) - float(lo["value"]))
        seeds += [int(lo["n_seeds"]), int(hi["n_seeds"])]
        parts.append(f"×{e:g}: {claim['metric_high']} {hi['value']:.4g} vs {claim['metric_low']} {lo['value']:.4g}")
    return _finish(parts, margins, seeds, notes)


def _run_gates(full: pd.DataFrame, claim: dict, kinds: set) -> list[str]:
    """Sanity gates of the runs a claim compares (their group's rows ``full``): every run converged
    (train.json's flag, eval ``train``), and for top-n claims every setup usable (``gate_usable``)."""
    gates = []
    involved = full[full["kind"].isin([k for k in kinds if k])]
    conv = involved[(involved["eval"] == "train") & (involved["metric"] == "converged")]
    bad = conv[conv["value"] < 1]
    if len(bad):
        runs = [
            f"{r['kind']} {r['setting']} ×{r['expansion']:g} ({r['value']:.0%} of seeds converged)"
            for _, r in bad.iterrows()
        ]
        gates.append("run(s) not converged: " + ", ".join(runs))
    if claim.get("eval") == "topn":
        usable = involved[(involved["eval"] == "topn") & (involved["metric"] == "gate_usable")]
        bad = usable[usable["value"] < 1]
        if len(bad):
            runs = [f"{r['kind']} {r['setting']} ×{r['expansion']:g}" for _, r in bad.iterrows()]
            gates.append(
                "degenerate top-n setup (full-SAE accuracy not within 10 points of no-SAE, or no-SAE near "
                "chance): " + ", ".join(runs)
            )
    return gates


def _check_calibration(g: pd.DataFrame, claim: dict, ref: dict, full: pd.DataFrame, gates: list[str]) -> Check:
    """``calibration``: the target's ``metric`` (the L0–complexity rank correlation) exceeds each baseline's
    at its setting whose mean L0 is nearest the target's (in log ratio, at most ``max_l0_ratio`` away), at
    every expansion; spreads that overlap are added to ``gates``."""
    parts, margins, seeds, notes = [], [], [], []
    metric, target = claim["metric"], claim["target"]
    for e in sorted(set(g["expansion"])):
        t = _at(g, target, e, metric, claim["setting"], ref)
        t_l0 = _at(full, target, e, claim["l0_metric"], claim["setting"], ref)
        if t is None or t_l0 is None or not math.isfinite(float(t["value"])):
            continue
        for kind in claim["others"]:
            cand = full[
                (full["kind"] == kind)
                & (np.abs(full["expansion"].astype(float) - e) < 1e-6)
                & (full["metric"] == claim["l0_metric"])
                & (full["setting"] != "guided")
            ]
            if cand.empty:
                notes.append(f"×{e:g}: no {kind}")
                continue
            ratio = np.abs(np.log(cand["value"].astype(float).clip(lower=1e-9) / float(t_l0["value"])))
            near = cand.iloc[int(np.argmin(ratio.to_numpy()))]
            if float(ratio.min()) > math.log(claim.get("max_l0_ratio", 2.0)):
                notes.append(
                    f"×{e:g}: no {kind} setting within ×{claim.get('max_l0_ratio', 2.0):g} of L0 "
                    f"{float(t_l0['value']):.3g}"
                )
                continue
            b = _at(g, kind, e, metric, near["setting"], ref)
            if b is None or not math.isfinite(float(b["value"])):
                continue
            margins.append(float(t["value"]) - float(b["value"]))
            seeds += [int(t["n_seeds"]), int(b["n_seeds"])]
            parts.append(
                f"×{e:g}: {float(t['value']):.3g} vs {kind} {near['setting']} (L0 {float(near['value']):.3g}) "
                f"{float(b['value']):.3g}"
            )
            if gate := _overlap_gate(full, t, b, ref, f"×{e:g} {kind}"):
                gates.append(gate)
    return _finish(parts, margins, seeds, notes)


def _claim_metrics(claim: dict, agg: pd.DataFrame) -> list[str]:
    if claim.get("metric_pattern"):
        pat = re.compile(claim["metric_pattern"])
        found = {m for m in agg["metric"] if pat.match(m)}
        return sorted(found, key=lambda m: (len(m), m))  # official/on_1, _5, _10, _50
    return [claim[k] for k in ("metric", "metric_low", "metric_high", "l0_metric") if claim.get(k)]


def _audit_claim(claim: dict, agg: pd.DataFrame, ref: dict) -> list[dict]:
    """One row per (config, backbone, dataset, hook) group of the claim's modality with data for it."""
    kinds = set(claim.get("kinds") or []) | {claim.get("target")} | set(claim.get("others") or [])
    metrics = _claim_metrics(claim, agg)
    rows = _where(agg, eval=claim["eval"], kind=sorted(k for k in kinds if k), metric=metrics)
    mod = claim.get("modality")
    extra = {"id": claim["id"], "type": "claim", "caveats": list(claim.get("caveats", []))}
    out, hooks, configs = [], rows.groupby(["backbone", "dataset"])["hook"].nunique(), agg["config"].nunique()
    for (cfg, bb, ds, hook), g in rows.groupby(GROUP, sort=True):
        m = _modality(ref, bb, ds)
        if mod and m is not None and m != mod:
            continue
        full = agg[(agg["config"] == cfg) & (agg["backbone"] == bb) & (agg["dataset"] == ds) & (agg["hook"] == hook)]
        gates = _run_gates(full, claim, kinds)
        if claim["relation"] in ("lowest", "beats"):
            check = _check_extreme(
                g,
                claim,
                ref,
                metrics if claim["relation"] == "beats" else [claim["metric"]],
                lower=claim["relation"] == "lowest",
                full=full,
                gates=gates,
            )
        elif claim["relation"] == "guided_beats_fixed":
            check = _check_guided(g, claim, ref, full, gates)
        elif claim["relation"] == "spread":
            check = _check_spread(g, claim, ref)
        elif claim["relation"] == "calibration":
            check = _check_calibration(g, claim, ref, full, gates)
        else:
            raise ValueError(f"claim {claim['id']}: unknown relation {claim['relation']!r}")
        holds, ours, margin, n, notes = check
        label = (
            f"{bb}/{ds}"
            + (f" @ {hook}" if hooks[(bb, ds)] > 1 else "")
            + (f" [{cfg or '(none)'}]" if configs > 1 else "")
        )
        setup = claim.get("paper_setup") or {}
        on_paper = (bb, ds) == (setup.get("backbone"), setup.get("dataset"))
        where = "paper setup" if on_paper else f"analogue of the paper's {setup.get('backbone')}/{setup.get('dataset')}"
        unknown = "; modality of this backbone unknown" if m is None and mod else ""
        verdict = {True: "reproduced", False: "not reproduced", None: "no data"}[holds]
        if holds is not None and gates:
            verdict = "inconclusive"
            unknown += "; failed gate(s): " + "; ".join(gates)
        reason = where + ("" if holds is None else "; delta = worst-case margin, > 0 iff it holds") + unknown
        reason += f"; {notes}" if notes else ""
        out.append(
            _row(
                f"{claim['item']} [{label}]",
                claim["paper"],
                ours,
                margin,
                verdict,
                reason,
                n,
                comparable=on_paper,
                group=label,
                **extra,
            )
        )
    if any(r["verdict"] != "no data" for r in out):  # analogue groups with nothing to compare only add noise
        out = [r for r in out if r["verdict"] != "no data" or r["comparable"]]
    if not out:
        scope = f"a {mod} backbone" if mod else "any backbone"
        want = "/".join(metrics) if metrics else claim.get("metric_pattern", "")
        out.append(
            _row(
                claim["item"],
                claim["paper"],
                None,
                None,
                "no data",
                f"no {claim['eval']} {want} of {', '.join(sorted(k for k in kinds if k))} on {scope}",
                0,
                comparable=False,
                group=None,
                **extra,
            )
        )
    return out


# ----- public API ------------------------------------------------------------------------------------------
def run_audit(metrics: pd.DataFrame, config: str | None = None, reference: dict | None = None) -> list[dict]:
    """Audit rows (module docstring) for a tidy metrics frame: every paper cell, the Food101 range, then every
    claim per data group. ``config`` keeps only that config's rows (None: all rows). SAEs imported from
    elsewhere (setting ``external``) are left out: the paper's claims are about methods trained here."""
    ref = reference if reference is not None else load_reference()
    df = validate_metrics(metrics)
    df = df[df["setting"] != "external"]
    if config is not None:
        df = df[df["config"] == config]
    agg = aggregate(df).astype(object)  # one object block: selecting rows of a small frame is ~2x faster
    rows = [_audit_cell(c, agg, ref) for c in ref["cells"]]
    rows += [_audit_range(r, agg, ref) for r in ref.get("ranges") or []]
    rows += [row for claim in ref["claims"] for row in _audit_claim(claim, agg, ref)]
    return rows


def strict_failures(rows: Iterable[dict], paper_setup_only: bool = False) -> list[dict]:
    """The rows that are "not reproduced": comparable cells and ranges, and claims (on any backbone, or only
    on the paper's setup when ``paper_setup_only``). Cells that are not comparable never fail."""
    return [r for r in rows if r["verdict"] == "not reproduced" and (r.get("comparable") or not paper_setup_only)]


def _cell_text(v: Any, signed: bool = False) -> str:
    if v is None or (isinstance(v, float) and math.isnan(v)):
        text = "–"
    elif isinstance(v, (int, float)) and not isinstance(v, bool):
        text = f"{v:+.4g}" if signed else f"{v:.4g}"
    else:
        text = str(v)
    return text.replace("|", "\\|").replace("\r", " ").replace("\n", " ")


def format_markdown(rows: list[dict], meta: dict | None = None) -> str:
    """The audit as markdown: a header (data, sources, caveats, tolerances, verdicts, counts), then one table
    row per audit row (claim or cell | paper | ours | delta | verdict | reason). ``meta`` keys (all
    optional): ``source`` (the CSV), ``config``, ``reference`` (default :func:`load_reference`)."""
    meta = meta or {}
    ref = meta.get("reference") or load_reference()
    paper = ref.get("paper", {})
    counts = {v: sum(r["verdict"] == v for r in rows) for v in VERDICTS}
    pn = ref["sources"].get("PN", {})
    lines = [
        f'# Paper audit: "{paper.get("title", "")}" (arXiv {paper.get("arxiv", "")})',
        "",
        f"Data: `{meta.get('source', '(in-memory frame)')}`; config: "
        f"{meta['config'] if meta.get('config') is not None else 'all configs present'}. "
        "Ours = mean over seeds (n_seeds per row).",
        "",
        "## Sources",
        "",
        f"Every paper number is **second-hand**: from the {pn.get('name', '[PN] summary')} [PN] "
        f"({pn.get('url', '')}; markdown: {pn.get('markdown', '')}), **not checked against the paper's PDF**. "
        "A mismatch may be a transcription error of the summary.",
        "",
        "## Caveats",
        "",
    ]
    lines += [f"- **{k}**: {v}" for k, v in ref["caveats"].items()]
    lines += ["", "## Tolerances", ""]
    for name, t in ref["tolerances"].items():
        rel, ab = float(t.get("relative") or 0), float(t.get("absolute") or 0)
        rule = f"|ours − paper| ≤ max({rel:.0%} · |paper|, {ab:g})" if rel else f"|ours − paper| ≤ {ab:g}"
        lines.append(f"- **{name}**: {rule}. {t.get('why', '')}")
    lines += [
        "",
        "## Verdicts",
        "",
        "- *reproduced* / *not reproduced*: a cell on the paper's backbone and dataset within / outside its "
        "tolerance; a relation (claim, Food101 range) that holds / fails on our numbers (delta = worst-case "
        "margin, > 0 when it holds). Claims are evaluated on every backbone present, the offline analogue "
        "included; the reason says whether the group is the paper's setup.",
        "- *inconclusive*: a relation computed on runs that fail a sanity gate: a run not converged, a "
        "degenerate top-n setup (full-SAE accuracy more than 10 points below no-SAE, or no-SAE near chance), "
        "or spreads of the compared values that overlap (mean ± std over seeds; with one seed the bootstrap "
        "interval over examples). The reason names the failed gate; the comparison is still shown.",
        "- *not comparable*: our data lacks the paper's backbone/dataset; ours shows the closest analogue.",
        "- *no data*: the run or metric is missing.",
        "",
        "Counts: " + ", ".join(f"{v} {counts[v]}" for v in VERDICTS) + ".",
        "",
        "## Results",
        "",
        "| " + " | ".join(TABLE_COLUMNS) + " |",
        "|" + "---|" * len(TABLE_COLUMNS),
    ]
    for r in rows:
        cells = [
            _cell_text(r["item"]),
            _cell_text(r["paper"]),
            _cell_text(r["ours"]),
            _cell_text(r["delta"], signed=True),
            r["verdict"],
            _cell_text(r["reason"] + (f" (n_seeds {r['n_seeds']})" if r.get("n_seeds") else "")),
        ]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def _atomic_write_text(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def write_audit(rows: list[dict], path: str | Path, meta: dict | None = None) -> Path:
    """Write the audit atomically (temporary file in the same folder, then ``os.replace``): ``.json`` →
    {"meta", "rows"}, ``.csv`` → one line per row, anything else → :func:`format_markdown`. Returns the path."""
    path = Path(path)
    if path.suffix == ".json":
        plain = {k: v for k, v in (meta or {}).items() if k != "reference"}
        text = json.dumps({"meta": plain, "rows": rows}, indent=1, ensure_ascii=False, default=str) + "\n"
    elif path.suffix == ".csv":
        flat = [{k: ";".join(v) if isinstance(v, list) else v for k, v in r.items()} for r in rows]
        text = pd.DataFrame(flat).to_csv(index=False)
    else:
        text = format_markdown(rows, meta)
    _atomic_write_text(path, text)
    return path


def audit_from_csv(csv_path: str | Path, out_md: str | Path, config: str | None = None) -> tuple[list[dict], str]:
    """Read the metrics CSV, audit it (:func:`run_audit`), write the markdown to ``out_md`` atomically and
    return (rows, markdown). ValueError for a missing/unreadable CSV or missing columns."""
    ref = load_reference()
    rows = run_audit(read_metrics(csv_path), config=config, reference=ref)
    meta = {"source": str(csv_path), "config": config, "reference": ref}
    text = format_markdown(rows, meta)
    _atomic_write_text(Path(out_md), text)
    return rows, text
