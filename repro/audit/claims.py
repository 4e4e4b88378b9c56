"""The paper's claims (relations) evaluated per data group, with their sanity gates (definitions:
:mod:`repro.audit.audit`)."""

from __future__ import annotations

import math
import re

import numpy as np
import pandas as pd

from repro.audit.data import GROUP, _modality, _row, _where, _where_setting

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
