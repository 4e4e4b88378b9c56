"""The paper's single numbers (cells) and the Food101 fixed-K range against our seed means (definitions:
:mod:`repro.audit.audit`)."""

from __future__ import annotations

import math

import pandas as pd

from repro.audit.data import GROUP, _best, _modality, _row, _where, _where_setting, _where_setup, _where_txt


def _tolerance(ref: dict, name: str, paper: float) -> tuple[float, str]:
    t = ref["tolerances"][name]
    rel, ab = float(t.get("relative") or 0.0), float(t.get("absolute") or 0.0)
    desc = f"max({rel:.0%} of paper, {ab:g})" if rel else f"±{ab:g} absolute"
    return max(ab, rel * abs(paper)), desc


def _setups(rows: pd.DataFrame) -> str:
    pairs = sorted({(b, d) for b, d in zip(rows["backbone"], rows["dataset"], strict=True)})
    return ", ".join(f"{b} on {d}" for b, d in pairs)


def _analogue(agg: pd.DataFrame, ref: dict, spec: dict, kind: str, metric: str, setting: str) -> pd.Series | None:
    """Closest analogue of a paper cell in our data (see :mod:`repro.audit.audit` for the preference order)."""
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
    """One paper number against our seed mean (:mod:`repro.audit.audit`)."""
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
    """The Food101 fixed-K range, checked as a relation to our sparsemax value (:mod:`repro.audit.audit`)."""
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
