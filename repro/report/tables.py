"""The paper's tables and their analogues, from the tidy ``metrics.csv`` (``repro.report.aggregate``).

Each table is built by one function from the metrics and written as Markdown and LaTeX (booktabs) by
:func:`render_table`. Numbers are means over seeds (± the standard deviation when there are several);
"–" marks a missing run. Tables (:data:`TABLES`):

- ``table_a``: NMSE, L0 and CE degradation by dictionary size for ReLU, JumpReLU, Gated, TopK, BatchTopK and
  sparsemax attention on the backbone of the size sweep (paper Table A: GPT-2; the embedded default: vision);
- ``table_b``: top-n concept classification, on-1/5/10/50 (official protocol, then held-out), for ReLU,
  attention + ReLU, MLP + sparsemax and sparsemax attention on the vision backbone (paper Table B);
- ``topn_methods``: top-n on and off, both protocols, for ReLU, TopK, BatchTopK and sparsemax, per dataset;
- ``guidance``: TopK/BatchTopK at fixed K and at the K derived from the sparsemax run's L0 ("guided"),
  and sparsemax itself: L0, on-1 (both protocols) and NMSE (paper's Food101 tuning-guidance table);
- ``matched_l0``: each method's NMSE and explained variance at the sparsemax SAE's L0, linearly
  interpolated in log L0 between the two runs of its sweep that bracket it (not reported by the paper);
- ``probing``: sparse probing accuracy of the SAE latents (top 1, 2, 5) and of the raw activations;
- ``external`` (built when the config lists external SAEs): imported SAEs beside ours (:mod:`repro.report.external`).

Runs imported from elsewhere (setting ``external``) appear only in the ``external`` table.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from repro import kinds
from repro.report import metrics_csv
from repro.report.catalogue import EXTERNAL_TABLE, TABLE_NAMES

TABLE_A_KINDS = ("relu", "jumprelu", "gated", "topk", "batchtopk", "sparsemax_attention")
TABLE_B_KINDS = ("relu", "attention_relu", "mlp_sparsemax", "sparsemax_attention")
METHOD_KINDS = ("relu", "topk", "batchtopk", "sparsemax_attention")


@dataclass
class Table:
    """A rendered table: a caption, column headers, rows of cell strings, and notes under it."""

    name: str
    caption: str
    header: list[str]
    rows: list[list[str]] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def markdown(self) -> str:
        lines = [
            f"**{self.caption}**",
            "",
            "| " + " | ".join(self.header) + " |",
            "|" + "|".join("---" for _ in self.header) + "|",
        ]
        lines += ["| " + " | ".join(r) + " |" for r in self.rows]
        return "\n".join(lines + [""] + [f"- {n}" for n in self.notes]) + "\n"

    def latex(self) -> str:
        def esc(s: str) -> str:
            return (
                s.replace("\\", "\\textbackslash{}")
                .replace("&", "\\&")
                .replace("%", "\\%")
                .replace("_", "\\_")
                .replace("#", "\\#")
                .replace("±", "$\\pm$")
                .replace("×", "$\\times$")
                .replace("–", "--")
                .replace("**", "")
            )

        body = [" & ".join(esc(c) for c in r) + " \\\\" for r in self.rows]
        return "\n".join(
            [
                "\\begin{table}[t]",
                "\\centering",
                f"\\caption{{{esc(self.caption)}}}",
                f"\\label{{tab:{self.name}}}",
                "\\begin{tabular}{l" + "r" * (len(self.header) - 1) + "}",
                "\\toprule",
                " & ".join(esc(h) for h in self.header) + " \\\\",
                "\\midrule",
                *body,
                "\\bottomrule",
                "\\end{tabular}",
                "\\end{table}",
                "",
            ]
        )


def read_metrics(path: str | Path) -> pd.DataFrame:
    """The tidy CSV, parsed and normalised (:func:`repro.report.metrics_csv.read`)."""
    return metrics_csv.read(path)


def _stats(df: pd.DataFrame, **where) -> tuple[float, float, int]:
    """Mean and standard deviation over seeds of the rows matching ``where`` (NaN when none)."""
    sel = df
    for key, value in where.items():
        sel = sel[sel[key] == value]
    values = sel.groupby("seed")["value"].mean().dropna()
    if values.empty:
        return math.nan, math.nan, 0
    return float(values.mean()), float(values.std(ddof=1)) if len(values) > 1 else 0.0, len(values)


def _cell(mean: float, std: float, n: int, fmt: str = "{:.3f}", bold: bool = False) -> str:
    if n == 0 or not math.isfinite(mean):
        return "–"
    text = fmt.format(mean) + (f" ± {fmt.format(std)}" if n > 1 else "")
    return f"**{text}**" if bold else text


def _cell_ci(df: pd.DataFrame, fmt: str = "{:.3f}", bold: bool = False, **where) -> str:
    """:func:`_cell` of the rows matching ``where``; with one seed, followed by the bootstrap 95 % interval
    over examples of that run (``<metric>_ci_lo`` / ``_ci_hi`` rows) when it was recorded."""
    mean, std, n = _stats(df, **where)
    text = _cell(mean, std, n, fmt=fmt, bold=bold)
    if n == 1 and "metric" in where:
        lo, hi = (_stats(df, **(where | {"metric": f"{where['metric']}_ci_{b}"}))[0] for b in ("lo", "hi"))
        if math.isfinite(lo) and math.isfinite(hi):
            text += f" [{fmt.format(lo)}, {fmt.format(hi)}]"
    return text


def _role_frame(df: pd.DataFrame, modality_backbones: tuple[str, ...]) -> pd.DataFrame:
    return df[df["backbone"].isin(modality_backbones)]


LANGUAGE = ("smollm2-135m", "gpt2-small", "minilm-l6")
VISION = ("effnet-lite0", "clip-vit-b16")


def _one_backbone(df: pd.DataFrame, backbones: tuple[str, ...], eval_name: str) -> tuple[pd.DataFrame, str]:
    """The rows of the first backbone in ``backbones`` (else any) that has evaluation ``eval_name``."""
    have = df[df["eval"] == eval_name]["backbone"].unique().tolist()
    for b in list(backbones) + sorted(have):
        if b in have:
            return df[df["backbone"] == b], b
    return df.iloc[0:0], "–"


def size_sweep_backbone(df: pd.DataFrame) -> str | None:
    """The backbone of the size sweep: the one whose default-setting reconstruction rows cover the most
    (Table A kind, expansion) cells (ties: a language backbone first, in :data:`LANGUAGE` order)."""
    rec = df[(df["eval"] == "reconstruction") & (df["setting"] == "default") & df["kind"].isin(TABLE_A_KINDS)]
    cover = rec.groupby("backbone")[["kind", "expansion"]].apply(lambda g: len(g.drop_duplicates()))
    if cover.empty:
        return None
    rank = {b: i for i, b in enumerate(LANGUAGE)}
    return min(cover.index, key=lambda b: (-int(cover[b]), rank.get(b, len(rank)), b))


def table_a(df: pd.DataFrame) -> Table:
    """Paper Table A analogue (module docstring), on the size sweep's backbone (:func:`size_sweep_backbone`)."""
    backbone = size_sweep_backbone(df) or "–"
    sub = df[df["backbone"] == backbone]
    sub = sub[sub["setting"] == "default"]
    xs = sorted(sub[sub["kind"].isin(TABLE_A_KINDS)]["expansion"].unique(), key=float)
    dataset = ", ".join(sorted(sub["dataset"].unique())) or "–"
    t = Table(
        "table_a",
        f"NMSE, EV, L0 and CE degradation by dictionary size ({backbone} on {dataset})",
        ["metric", "method"] + [f"{_fmt_x(x)}×d" for x in xs],
    )
    for metric, eval_name, fmt, best in (
        ("NMSE", "nmse", "{:.4f}", min),
        ("EV", "ev", "{:.3f}", max),
        ("L0", "l0", "{:.1f}", None),
        ("CE degradation (nats)", "ce_delta", "{:.4f}", min),
    ):
        ev = "lm_loss" if eval_name == "ce_delta" else "reconstruction"
        cells = {(k, x): _stats(sub, kind=k, expansion=x, eval=ev, metric=eval_name) for k in TABLE_A_KINDS for x in xs}
        for k in TABLE_A_KINDS:
            row = [metric, kinds.label(k)]
            for x in xs:
                col = [cells[(kk, x)][0] for kk in TABLE_A_KINDS if math.isfinite(cells[(kk, x)][0])]
                is_best = best is not None and col and cells[(k, x)][0] == best(col)
                row.append(_cell_ci(sub, fmt=fmt, bold=bool(is_best), kind=k, expansion=x, eval=ev, metric=eval_name))
            t.rows.append(row)
    t.notes = [
        "NMSE = Σ‖x − x̂‖² / Σ‖x‖² on held-out tokens (uncentred ratio of sums); EV = 1 − Σ‖x − x̂‖² / "
        "Σ‖x − x̄‖² (centred, negative when worse than predicting the mean); bold = best in the column.",
        "CE degradation = CE with the SAE spliced in − clean CE, per token, BOS and padding excluded.",
        "Each method at its paper setting (K = 32; ReLU λ = 5, JumpReLU λ = 1, Gated λ = 1 on normalised "
        "inputs); the L0s differ, so NMSE here is not a comparison at equal sparsity: see matched_l0.",
        "Cells: mean ± standard deviation over seeds when there are several; with one seed, NMSE and L0 "
        "[bootstrap 95 % interval over held-out examples].",
    ]
    return t


def _fmt_x(x) -> str:
    x = float(x)
    return f"{x:g}"


def _topn_rows(
    t: Table,
    sub: pd.DataFrame,
    kind_names,
    protocol: str,
    ns: list[int],
    label: str,
    setting="default",
    side: str = "on",
):
    for k in kind_names:
        row = [label, kinds.label(k)]
        row += [
            _cell_ci(sub, fmt="{:.1f}", kind=k, setting=setting, eval="topn", metric=f"{protocol}/{side}_{n}")
            for n in ns
        ]
        t.rows.append(row)


def _ns(sub: pd.DataFrame) -> list[int]:
    ms = sub[(sub["eval"] == "topn") & sub["metric"].str.fullmatch(r"official/on_[0-9]+")]["metric"].unique()
    return sorted(int(m.split("_")[-1]) for m in ms)


def table_b(df: pd.DataFrame) -> Table:
    """Paper Table B analogue (module docstring), with the controls and the setup gate: per protocol each
    configuration's on-n; then, selected on the training split, the class-agnostic top-n and n random
    latents; then per configuration the no-SAE and full-SAE accuracies and whether the setup passed its
    gate (repro.evals.topn.setup_gate)."""
    sub, backbone = _one_backbone(df, VISION, "topn")
    ns = _ns(sub)
    xs = sorted(sub[(sub["eval"] == "topn") & sub["kind"].isin(TABLE_B_KINDS)]["expansion"].unique(), key=float)
    if len(xs) > 1:  # the ablation's size: the one with every Table B kind, else the largest
        full = [x for x in xs if set(TABLE_B_KINDS) <= set(sub[sub["expansion"] == x]["kind"])]
        sub = sub[sub["expansion"] == (full or xs)[-1]]
    dataset = ", ".join(sorted(sub[sub["eval"] == "topn"]["dataset"].unique())) or "–"
    t = Table(
        "table_b",
        f"Top-n concept classification accuracy (%), {backbone} on {dataset}",
        ["protocol", "configuration"] + [f"on {n}" for n in ns],
    )
    _topn_rows(t, sub, TABLE_B_KINDS, "official", ns, "official")
    _topn_rows(t, sub, TABLE_B_KINDS, "heldout", ns, "held-out")
    for side, label in (("agnostic", "control: class-agnostic top-n"), ("random", "control: n random latents")):
        if sub["metric"].str.startswith(f"heldout/{side}_").any():
            _topn_rows(t, sub, TABLE_B_KINDS, "heldout", ns, label, side=side)
    refs = []
    for k in TABLE_B_KINDS:
        cells = [
            _cell_ci(sub, fmt="{:.1f}", kind=k, setting="default", eval="topn", metric=m)
            for m in ("no_sae", "sae", "on_all")
        ]
        gate = _stats(sub, kind=k, setting="default", eval="topn", metric="gate_usable")
        verdict = "–" if gate[2] == 0 else ("usable" if gate[0] == 1 else f"FAILED ({gate[0]:.0%} of seeds usable)")
        refs.append(f"{kinds.label(k)}: no SAE {cells[0]}, full SAE {cells[1]}, on all {cells[2]}; gate {verdict}.")
    t.notes = [
        "on n: only each class's n latents with the most nonzero activations on the counting split kept in "
        "the reconstruction spliced at the hook (code without the frequency mask, as the official "
        "forward_clamp); class-balanced accuracy; mean ± std over seeds, or with one seed the accuracy "
        "[bootstrap 95 % interval over test examples, stratified by class].",
        "official: latents counted on the classified split (as the official code); held-out: counted on "
        "the training split. Controls: the n latents most active over all classes, and n seeded random "
        "firing latents, the same for every class.",
        "gate: a setup is usable only when no-SAE accuracy is at least twice chance and the full "
        "reconstructions lose at most 10 points of it; otherwise on-n measures the setup, not the latents.",
        *refs,
    ]
    return t


def topn_methods(df: pd.DataFrame) -> Table:
    """Per-dataset top-n for ReLU, TopK, BatchTopK and sparsemax, both protocols (module docstring)."""
    sub = df[(df["eval"] == "topn") & (df["setting"] == "default") & df["kind"].isin(METHOD_KINDS)]
    ns = _ns(sub)
    t = Table(
        "topn_methods",
        "Top-n concept classification (%) by method, dataset and protocol",
        ["dataset", "method", "protocol"] + [f"on {n}" for n in ns] + [f"off {n}" for n in ns] + ["full SAE"],
    )
    for (backbone, dataset), g in sub.groupby(["backbone", "dataset"]):
        x = g.groupby("expansion")["kind"].nunique().idxmax()
        g = g[g["expansion"] == x]
        for k in METHOD_KINDS:
            for protocol in ("official", "heldout"):
                row = [f"{dataset} ({backbone}, {_fmt_x(x)}×d)", kinds.label(k), protocol]
                row += [
                    _cell_ci(g, fmt="{:.1f}", kind=k, metric=f"{protocol}/{side}_{n}")
                    for side in ("on", "off")
                    for n in ns
                ]
                row.append(_cell_ci(g, fmt="{:.1f}", kind=k, metric="sae"))
                t.rows.append(row)
    t.notes = [
        "off n: the class's n latents removed; full SAE: every latent kept (on all).",
        "Cells: mean ± std over seeds, or with one seed the accuracy [bootstrap 95 % interval over test "
        "examples, stratified by class].",
    ]
    return t


def guidance(df: pd.DataFrame) -> Table:
    """The tuning-guidance table (module docstring)."""
    guided = df[(df["setting"] == "guided") & (df["eval"] == "topn")]
    t = Table(
        "guidance",
        "Tuning guidance: TopK/BatchTopK at fixed K and at the K from the sparsemax SAE's L0",
        ["dataset", "method", "setting", "L0", "on 1 (official)", "on 1 (held-out)", "NMSE"],
    )
    for (backbone, dataset, x), _ in guided.groupby(["backbone", "dataset", "expansion"]):
        g = df[(df["backbone"] == backbone) & (df["dataset"] == dataset) & (df["expansion"] == x)]
        entries = [("sparsemax_attention", "default", "default")]  # (kind, setting, label)
        for k in kinds.guided_kinds():
            fixed = {s: int(s[2:]) for s in g[g["kind"] == k]["setting"].unique() if s.startswith("k=")}
            default_k = _stats(g, kind=k, setting="default", eval="train", metric="hp_k")
            if default_k[2]:
                fixed["default"] = int(default_k[0])
            entries += [
                (k, s, f"k={fixed[s]} (default)" if s == "default" else s) for s in sorted(fixed, key=fixed.get)
            ]
            gk = _stats(g, kind=k, setting="guided", eval="train", metric="hp_k")
            value = "" if gk[2] == 0 else f" = {gk[0]:.0f}" if gk[2] == 1 else f" = {gk[0]:.1f} ± {gk[1]:.1f}"
            entries.append((k, "guided", f"guided (K = round(L0 of sparsemax){value})"))
        for kind, setting, name in entries:
            l0 = _stats(g, kind=kind, setting=setting, eval="reconstruction", metric="l0")
            if l0[2] == 0 and setting == "default":
                continue
            on1 = [
                _cell_ci(g, fmt="{:.1f}", kind=kind, setting=setting, eval="topn", metric=f"{p}/on_1")
                for p in ("official", "heldout")
            ]
            rec = {"kind": kind, "setting": setting, "eval": "reconstruction"}
            t.rows.append(
                [
                    f"{dataset} ({backbone}, {_fmt_x(x)}×d)",
                    kinds.label(kind),
                    name,
                    _cell_ci(g, fmt="{:.1f}", metric="l0", **rec),
                    *on1,
                    _cell_ci(g, fmt="{:.4f}", metric="nmse", **rec),
                ]
            )
    t.notes = [
        "The paper (Food101, CLIP): sparsemax on-1 26.11 % against 0.99–8.64 % for TopK/BatchTopK at K = 24/32.",
        "Cells: mean ± std over seeds, or with one seed the value [bootstrap 95 % interval over test examples].",
    ]
    return t


def interpolate_at(l0s: list[float], values: list[float], target: float) -> float:
    """``values`` linearly interpolated in log L0 at ``target`` between the two bracketing points (NaN when
    the target is outside [min L0, max L0] or fewer than two points)."""
    pts = sorted((x, v) for x, v in zip(l0s, values, strict=True) if x > 0 and math.isfinite(x) and math.isfinite(v))
    for (l1, v1), (l2, v2) in zip(pts, pts[1:], strict=False):
        if l1 <= target <= l2:
            if l1 == l2:
                return (v1 + v2) / 2
            w = (math.log(target) - math.log(l1)) / (math.log(l2) - math.log(l1))
            return v1 + w * (v2 - v1)
    return math.nan


MATCHED_METRICS = (
    ("NMSE", "reconstruction", "nmse", "{:.4f}"),
    ("EV", "reconstruction", "ev", "{:.3f}"),
    ("per-token NMSE", "reconstruction", "nmse_tok", "{:.4f}"),
    ("CE Δ (nats)", "lm_loss", "ce_delta", "{:.4f}"),
    ("KL", "lm_loss", "kl_sae", "{:.4f}"),
)


def _sweep_frame(g: pd.DataFrame) -> pd.DataFrame:
    """(kind, setting, seed) × metric: reconstruction and lm_loss metrics of one backbone and size."""
    keep = g[g["eval"].isin(["reconstruction", "lm_loss"])]
    return keep.pivot_table(index=["kind", "setting", "seed"], columns="metric", values="value", aggfunc="mean")


def matched_at(frame: pd.DataFrame, kind: str, target: float, metric: str, seed=None) -> float:
    """``metric`` of ``kind`` interpolated in log L0 at ``target`` over its settings (one seed, or the
    seed-mean of each setting when ``seed`` is None); NaN outside the sweep."""
    pts = frame.loc[kind]
    pts = pts.xs(seed, level="seed") if seed is not None else pts.groupby(level="setting").mean()
    if metric not in pts or "l0" not in pts:
        return math.nan
    return interpolate_at(pts["l0"].tolist(), pts[metric].tolist(), target)


def matched_l0(df: pd.DataFrame) -> Table:
    """Each method's metrics at the sparsemax SAE's L0 (module docstring): per backbone and size, every
    knob kind's sweep interpolated in log L0 at the sparsemax run's held-out L0. With several seeds the
    interpolation is done per seed (target = that seed's sparsemax L0) and the cell is mean ± std over
    seeds whose sweep brackets their target (the seeds column counts them); with one seed the NMSE cell
    carries the bootstrap 95 % interval over held-out examples, interpolated the same way. A sweep whose L0
    range brackets no seed's target says so."""
    t = Table(
        "matched_l0",
        "Metrics at the sparsemax SAE's L0 (each method interpolated on its sweep)",
        ["backbone", "size", "method", "seeds", "sweep L0 (target)"] + [m[0] for m in MATCHED_METRICS],
    )
    df = df[df["setting"] != "external"]  # SAEs imported from elsewhere: the `external` table
    sweeps = df[(df["eval"] == "reconstruction") & ~df["setting"].isin(["default", "guided"])]
    for (backbone, x), _ in sweeps.groupby(["backbone", "expansion"]):
        frame = _sweep_frame(df[(df["backbone"] == backbone) & (df["expansion"] == x)])
        if ("sparsemax_attention", "default") not in frame.index.droplevel("seed"):
            continue
        ref = frame.loc[("sparsemax_attention", "default")]
        seeds = sorted(ref.index)
        targets = {s: float(ref.loc[s, "l0"]) for s in seeds}
        mean_target = float(np.mean(list(targets.values())))
        row = [
            backbone,
            f"{_fmt_x(x)}×d",
            kinds.label("sparsemax_attention"),
            str(len(seeds)),
            f"L0 = {mean_target:.1f}" + (f" ± {np.std(list(targets.values()), ddof=1):.1f}" if len(seeds) > 1 else ""),
        ]
        for _, _, metric, fmt in MATCHED_METRICS:
            vals = [float(ref.loc[s, metric]) for s in seeds if metric in ref]
            row.append(_seed_cell(vals, fmt) + (_ci_text(ref, seeds, fmt) if metric == "nmse" else ""))
        t.rows.append(row)
        others = sorted({k for k, _, _ in frame.index} - {"sparsemax_attention"}, key=lambda k: (kinds.rank(k), k))
        for kind in others:
            pts = frame.loc[kind]
            kind_seeds = sorted(set(pts.index.get_level_values("seed")) & set(seeds))
            l0s = pts["l0"].dropna()
            span = f"{l0s.min():.1f}–{l0s.max():.1f} ({pts.index.get_level_values('setting').nunique()} settings)"
            row = [backbone, f"{_fmt_x(x)}×d", kinds.label(kind), str(len(kind_seeds)), span]
            if pts.index.get_level_values("setting").nunique() < 2:  # no sparsity knob (MLP + sparsemax)
                row[3] = str(pts.index.get_level_values("seed").nunique())
                t.rows.append(
                    row
                    + [f"no sweep: one setting (L0 {l0s.mean():.1f}), nothing to interpolate"]
                    + ["–"] * (len(MATCHED_METRICS) - 1)
                )
                continue
            kind_seeds = [s for s in kind_seeds if math.isfinite(matched_at(frame, kind, targets[s], "l0", s))]
            row[3] = str(len(kind_seeds))
            if not kind_seeds:
                t.rows.append(row + [f"not bracketed (target {mean_target:.1f})"] + ["–"] * (len(MATCHED_METRICS) - 1))
                continue
            for _, _, metric, fmt in MATCHED_METRICS:
                vals = [matched_at(frame, kind, targets[s], metric, s) for s in kind_seeds]
                cell = _seed_cell([v for v in vals if math.isfinite(v)], fmt)
                if metric == "nmse" and len(kind_seeds) == 1:
                    s0 = kind_seeds[0]
                    lo, hi = (matched_at(frame, kind, targets[s0], m, s0) for m in ("nmse_ci_lo", "nmse_ci_hi"))
                    cell += f" [{fmt.format(lo)}, {fmt.format(hi)}]" if math.isfinite(lo) and math.isfinite(hi) else ""
                row.append(cell)
            t.rows.append(row)
    t.notes = [
        "Interpolation is linear in log L0 between the two settings of the method's sweep whose held-out L0 "
        "bracket the sparsemax SAE's; no extrapolation ('not bracketed' when the sweep misses the target).",
        "Cells: mean ± standard deviation over seeds (each seed interpolated at its own sparsemax L0); with "
        "one seed, NMSE [bootstrap 95 % interval over held-out examples].",
        "NMSE = Σ‖x − x̂‖² / Σ‖x‖² (uncentred ratio of sums); EV = 1 − Σ‖x − x̂‖² / Σ‖x − x̄‖² (negative when "
        "worse than the mean); per-token NMSE = mean over tokens of ‖x − x̂‖²/‖x‖²; CE Δ and KL: next-token "
        "cross-entropy increase and KL(clean ‖ spliced) per token (language only).",
    ]
    return t


def _seed_cell(vals: list[float], fmt: str) -> str:
    vals = [v for v in vals if math.isfinite(v)]
    if not vals:
        return "–"
    text = fmt.format(float(np.mean(vals)))
    return text + (f" ± {fmt.format(float(np.std(vals, ddof=1)))}" if len(vals) > 1 else "")


def _ci_text(ref: pd.DataFrame, seeds: list, fmt: str) -> str:
    if len(seeds) != 1 or "nmse_ci_lo" not in ref:
        return ""
    lo, hi = float(ref.loc[seeds[0], "nmse_ci_lo"]), float(ref.loc[seeds[0], "nmse_ci_hi"])
    return f" [{fmt.format(lo)}, {fmt.format(hi)}]" if math.isfinite(lo) and math.isfinite(hi) else ""


def probing(df: pd.DataFrame) -> Table:
    """Sparse probing accuracy (module docstring)."""
    sub = df[(df["eval"] == "probing") & (df["setting"] == "default")]
    t = Table(
        "probing",
        "Sparse probing accuracy (balanced one-vs-rest, mean over classes)",
        ["dataset", "representation", "top 1", "top 2", "top 5", "all"],
    )
    for (backbone, dataset), g in sub.groupby(["backbone", "dataset"]):
        where = f"{dataset} ({backbone})"
        t.rows.append(
            [where, "raw activations"]
            + [_cell(*_stats(g, metric=f"raw_top_{k}")) for k in (1, 2, 5)]
            + [_cell(*_stats(g, metric="raw_all"))]
        )
        for k in sorted(set(g["kind"]), key=lambda k: (kinds.rank(k), k)):
            t.rows.append(
                [where, f"{kinds.label(k)} latents ({_fmt_x(g[g['kind'] == k]['expansion'].iloc[0])}×d)"]
                + [_cell(*_stats(g, kind=k, metric=f"sae_top_{n}")) for n in (1, 2, 5)]
                + ["–"]
            )
    t.notes = [
        "SAEBench recipe: encode every token, mean-pool over real tokens, top-k latents by |mean difference| "
        "on the training split, logistic regression (C = 1); raw rows use the pooled activations."
    ]
    return t


_BUILD: dict[str, Callable[[pd.DataFrame], Table]] = {
    "table_a": table_a,
    "table_b": table_b,
    "topn_methods": topn_methods,
    "guidance": guidance,
    "matched_l0": matched_l0,
    "probing": probing,
}


def _external(df: pd.DataFrame) -> Table:
    from repro.report.external import external  # it builds on this module

    return external(df)


# in the catalogue's order (repro.report.catalogue, which the Snakefile reads), then the table built only when
# the config lists external SAEs
TABLES: dict[str, Callable[[pd.DataFrame], Table]] = {name: _BUILD[name] for name in TABLE_NAMES}
TABLES[EXTERNAL_TABLE] = _external


def training_notes(df: pd.DataFrame, table: Table) -> list[str]:
    """Notes marking what a reader must know about the runs behind ``table``: the runs of its backbones
    whose training did not converge (train.json's ``converged`` false: held-out NMSE still improving by
    more than 1 % over the last quarter) and the fewest training tokens any of them saw."""
    train = df[df["eval"] == "train"]
    if train.empty:
        return []
    shown = {b for b in df["backbone"].unique() if any(b in c for c in [table.caption, *map(" ".join, table.rows)])}
    train = train[train["backbone"].isin(shown)] if shown else train
    out = []
    conv = train[train["metric"] == "converged"]
    bad = sorted(conv[conv["value"] == 0]["run"].unique())
    if len(bad):
        from repro.train import CONVERGED_RTOL

        out.append(
            f"Not converged (held-out NMSE still falling > {CONVERGED_RTOL:.0%} over the quarter of the run "
            f"before the lr decay begins, or the last quarter without one): {', '.join(bad)}."
        )
    tokens = train[train["metric"] == "tokens_seen"]["value"].dropna()
    if len(tokens):
        out.append(f"Every SAE behind this table saw at least {int(tokens.min()):,} training tokens.")
    return out


def render_table(name: str, metrics_csv: str | Path, out_stem: str | Path) -> list[Path]:
    """Build table ``name`` from ``metrics_csv``; write ``<out_stem>.md`` and ``.tex`` atomically."""
    from repro.files import atomic_write

    if name not in TABLES:
        raise ValueError(f"unknown table {name!r}; known: {', '.join(TABLES)}")
    df = read_metrics(metrics_csv)
    table = TABLES[name](df)
    table.notes += training_notes(df, table)
    out_stem = Path(out_stem)
    out_stem.parent.mkdir(parents=True, exist_ok=True)
    paths = []
    for suffix, text in ((".md", table.markdown()), (".tex", table.latex())):
        path = out_stem.with_suffix(suffix)
        atomic_write(path, lambda p, text=text: Path(p).write_text(text))
        paths.append(path)
    return paths
