"""The paper's tables and their analogues, from the tidy ``metrics.csv`` (``repro.report.aggregate``).

Each table is built by one function from the metrics and written as Markdown and LaTeX (booktabs) by
:func:`render_table`. Numbers are means over seeds (± the standard deviation when there are several);
"–" marks a missing run. Tables (:data:`TABLES`):

- ``table_a``: NMSE, L0 and CE degradation by dictionary size for ReLU, JumpReLU, Gated, TopK, BatchTopK and
  sparsemax attention on the language backbone (paper Table A);
- ``table_b``: top-n concept classification, on-1/5/10/50 (official protocol, then held-out), for ReLU,
  attention + ReLU, MLP + sparsemax and sparsemax attention on the vision backbone (paper Table B);
- ``topn_methods``: top-n on and off, both protocols, for ReLU, TopK, BatchTopK and sparsemax, per dataset;
- ``guidance``: TopK/BatchTopK at fixed K and at the K derived from the sparsemax run's L0 ("guided"),
  and sparsemax itself: L0, on-1 (both protocols) and NMSE (paper's Food101 tuning-guidance table);
- ``matched_l0``: each method's NMSE and explained variance at the sparsemax SAE's L0, linearly
  interpolated in log L0 between the two runs of its sweep that bracket it (not reported by the paper);
- ``probing``: sparse probing accuracy of the SAE latents (top 1, 2, 5) and of the raw activations.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from repro.report.catalogue import TABLE_NAMES

KIND_ORDER = ("relu", "jumprelu", "gated", "topk", "batchtopk", "attention_relu", "mlp_sparsemax",
              "sparsemax_attention", "sparsemax_attention_paper")
KIND_LABELS = {"relu": "ReLU", "jumprelu": "JumpReLU", "gated": "Gated", "topk": "TopK", "batchtopk": "BatchTopK",
               "attention_relu": "Attention + ReLU", "mlp_sparsemax": "MLP + sparsemax",
               "sparsemax_attention": "Sparsemax SAE", "sparsemax_attention_paper": "Sparsemax SAE (paper eq.)"}
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
        lines = [f"**{self.caption}**", "", "| " + " | ".join(self.header) + " |",
                 "|" + "|".join("---" for _ in self.header) + "|"]
        lines += ["| " + " | ".join(r) + " |" for r in self.rows]
        return "\n".join(lines + [""] + [f"- {n}" for n in self.notes]) + "\n"

    def latex(self) -> str:
        def esc(s: str) -> str:
            return (s.replace("\\", "\\textbackslash{}").replace("&", "\\&").replace("%", "\\%").replace("_", "\\_")
                    .replace("#", "\\#").replace("±", "$\\pm$").replace("×", "$\\times$").replace("–", "--")
                    .replace("**", ""))

        body = [" & ".join(esc(c) for c in r) + " \\\\" for r in self.rows]
        return "\n".join(["\\begin{table}[t]", "\\centering", f"\\caption{{{esc(self.caption)}}}",
                          f"\\label{{tab:{self.name}}}", "\\begin{tabular}{l" + "r" * (len(self.header) - 1) + "}",
                          "\\toprule", " & ".join(esc(h) for h in self.header) + " \\\\", "\\midrule", *body,
                          "\\bottomrule", "\\end{tabular}", "\\end{table}", ""])


def read_metrics(path: str | Path) -> pd.DataFrame:
    """The tidy CSV with numeric columns parsed."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no metrics (run the workflow or `repro aggregate` first)")
    df = pd.read_csv(path, dtype={"setting": str, "run": str})
    df["value"] = pd.to_numeric(df["value"], errors="coerce")
    return df


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


def table_a(df: pd.DataFrame) -> Table:
    """Paper Table A analogue (module docstring)."""
    sub, backbone = _one_backbone(df, LANGUAGE, "reconstruction")
    sub = sub[sub["setting"] == "default"]
    xs = sorted(sub[sub["kind"].isin(TABLE_A_KINDS)]["expansion"].unique(), key=float)
    dataset = ", ".join(sorted(sub["dataset"].unique())) or "–"
    t = Table("table_a", f"NMSE, L0 and CE degradation by dictionary size ({backbone} on {dataset})",
              ["metric", "method"] + [f"{_fmt_x(x)}×d" for x in xs])
    for metric, eval_name, fmt, best in (("NMSE", "nmse", "{:.4f}", min), ("L0", "l0", "{:.1f}", None),
                                        ("CE degradation (nats)", "ce_delta", "{:.4f}", min)):
        ev = "lm_loss" if eval_name == "ce_delta" else "reconstruction"
        cells = {(k, x): _stats(sub, kind=k, expansion=x, eval=ev, metric=eval_name) for k in TABLE_A_KINDS for x in xs}
        for k in TABLE_A_KINDS:
            row = [metric, KIND_LABELS[k]]
            for x in xs:
                col = [cells[(kk, x)][0] for kk in TABLE_A_KINDS if math.isfinite(cells[(kk, x)][0])]
                is_best = best is not None and col and cells[(k, x)][0] == best(col)
                row.append(_cell(*cells[(k, x)], fmt=fmt, bold=bool(is_best)))
            t.rows.append(row)
    t.notes = ["NMSE = Σ‖x − x̂‖² / Σ‖x‖² on held-out tokens; bold = best in the column (lower is better).",
               "CE degradation = CE with the SAE spliced in − clean CE, per token, BOS and padding excluded.",
               "Each method at its paper setting (K = 32; sparsity weight 1e-3); L0 is reported because NMSE is "
               "only comparable at similar sparsity (see matched_l0)."]
    return t


def _fmt_x(x) -> str:
    x = float(x)
    return f"{x:g}"


def _topn_rows(t: Table, sub: pd.DataFrame, kinds, protocol: str, ns: list[int], label: str, setting="default"):
    for k in kinds:
        row = [label, KIND_LABELS.get(k, k)]
        row += [_cell(*_stats(sub, kind=k, setting=setting, eval="topn", metric=f"{protocol}/on_{n}"), fmt="{:.2f}")
                for n in ns]
        t.rows.append(row)


def _ns(sub: pd.DataFrame) -> list[int]:
    ms = sub[(sub["eval"] == "topn") & sub["metric"].str.startswith("official/on_")]["metric"].unique()
    return sorted(int(m.split("_")[-1]) for m in ms)


def table_b(df: pd.DataFrame) -> Table:
    """Paper Table B analogue (module docstring)."""
    sub, backbone = _one_backbone(df, VISION, "topn")
    ns = _ns(sub)
    xs = sorted(sub[(sub["eval"] == "topn") & sub["kind"].isin(TABLE_B_KINDS)]["expansion"].unique(), key=float)
    if len(xs) > 1:  # the ablation's size: the one with every Table B kind, else the largest
        full = [x for x in xs if set(TABLE_B_KINDS) <= set(sub[sub["expansion"] == x]["kind"])]
        sub = sub[sub["expansion"] == (full or xs)[-1]]
    dataset = ", ".join(sorted(sub[sub["eval"] == "topn"]["dataset"].unique())) or "–"
    t = Table("table_b", f"Top-n concept classification accuracy (%), {backbone} on {dataset}",
              ["protocol", "configuration"] + [f"on {n}" for n in ns])
    _topn_rows(t, sub, TABLE_B_KINDS, "official", ns, "official")
    _topn_rows(t, sub, TABLE_B_KINDS, "heldout", ns, "held-out")
    ref = [_cell(*_stats(sub, kind=k, setting="default", eval="topn", metric="no_sae"), fmt="{:.2f}")
           for k in TABLE_B_KINDS]
    t.notes = ["on n: only each class's n most frequent latents (count of tokens with activation > threshold) kept "
               "in the reconstruction spliced at the hook; class-balanced accuracy.",
               "official: latents counted on the classified split (as the official code); held-out: counted on "
               "the training split.",
               f"Without any SAE the head scores {ref[0] if ref else '–'} %."]
    return t


def topn_methods(df: pd.DataFrame) -> Table:
    """Per-dataset top-n for ReLU, TopK, BatchTopK and sparsemax, both protocols (module docstring)."""
    sub = df[(df["eval"] == "topn") & (df["setting"] == "default") & df["kind"].isin(METHOD_KINDS)]
    ns = _ns(sub)
    t = Table("topn_methods", "Top-n concept classification (%) by method, dataset and protocol",
              ["dataset", "method", "protocol"] + [f"on {n}" for n in ns] + [f"off {n}" for n in ns] + ["full SAE"])
    for (backbone, dataset), g in sub.groupby(["backbone", "dataset"]):
        x = g.groupby("expansion")["kind"].nunique().idxmax()
        g = g[g["expansion"] == x]
        for k in METHOD_KINDS:
            for protocol in ("official", "heldout"):
                row = [f"{dataset} ({backbone}, {_fmt_x(x)}×d)", KIND_LABELS[k], protocol]
                row += [_cell(*_stats(g, kind=k, metric=f"{protocol}/{side}_{n}"), fmt="{:.2f}")
                        for side in ("on", "off") for n in ns]
                row.append(_cell(*_stats(g, kind=k, metric="sae"), fmt="{:.2f}"))
                t.rows.append(row)
    t.notes = ["off n: the class's n latents removed; full SAE: every latent kept (on all)."]
    return t


def guidance(df: pd.DataFrame) -> Table:
    """The tuning-guidance table (module docstring)."""
    guided = df[(df["setting"] == "guided") & (df["eval"] == "topn")]
    t = Table("guidance", "Tuning guidance: TopK/BatchTopK at fixed K and at the K from the sparsemax SAE's L0",
              ["dataset", "method", "setting", "L0", "on 1 (official)", "on 1 (held-out)", "NMSE"])
    for (backbone, dataset, x), _ in guided.groupby(["backbone", "dataset", "expansion"]):
        g = df[(df["backbone"] == backbone) & (df["dataset"] == dataset) & (df["expansion"] == x)]
        entries = [("sparsemax_attention", "default")]
        for k in ("topk", "batchtopk"):
            settings = sorted(s for s in g[g["kind"] == k]["setting"].unique() if s.startswith("k="))
            entries += [(k, s) for s in sorted(settings, key=lambda s: int(s[2:]))] + [(k, "guided")]
        for kind, setting in entries:
            l0 = _stats(g, kind=kind, setting=setting, eval="reconstruction", metric="l0")
            if l0[2] == 0 and setting == "default":
                continue
            name = "guided (K = round(L0 of sparsemax))" if setting == "guided" else setting
            on1 = [_cell(*_stats(g, kind=kind, setting=setting, eval="topn", metric=f"{p}/on_1"), fmt="{:.2f}")
                   for p in ("official", "heldout")]
            nmse = _stats(g, kind=kind, setting=setting, eval="reconstruction", metric="nmse")
            t.rows.append([f"{dataset} ({backbone}, {_fmt_x(x)}×d)", KIND_LABELS[kind], name,
                           _cell(*l0, fmt="{:.1f}"), *on1, _cell(*nmse, fmt="{:.4f}")])
    t.notes = ["The paper (Food101, CLIP): sparsemax on-1 26.11 % against 0.99–8.64 % for TopK/BatchTopK at K = 24/32."]
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


def matched_l0(df: pd.DataFrame) -> Table:
    """Each method's NMSE and EV at the sparsemax SAE's L0 (module docstring)."""
    rec = df[df["eval"] == "reconstruction"]
    t = Table("matched_l0", "NMSE and explained variance at the sparsemax SAE's L0 (interpolated on each sweep)",
              ["backbone", "size", "method", "L0 range of sweep", "NMSE at matched L0", "EV at matched L0"])
    sweeps = rec[~rec["setting"].isin(["default", "guided"])]
    for (backbone, x), _ in sweeps.groupby(["backbone", "expansion"]):
        g = rec[(rec["backbone"] == backbone) & (rec["expansion"] == x)]
        pivot = g.pivot_table(index=["kind", "setting"], columns="metric", values="value", aggfunc="mean")
        pivot = pivot.reindex(columns=["l0", "nmse", "ev"])
        if ("sparsemax_attention", "default") not in pivot.index:
            continue
        target = float(pivot.loc[("sparsemax_attention", "default"), "l0"])
        ref = pivot.loc[("sparsemax_attention", "default")]
        t.rows.append([backbone, f"{_fmt_x(x)}×d", KIND_LABELS["sparsemax_attention"], f"L0 = {target:.1f}",
                       f"{ref['nmse']:.4f}", f"{ref['ev']:.3f}"])
        for kind in sorted({k for k, _ in pivot.index} - {"sparsemax_attention"}, key=KIND_ORDER.index):
            pts = pivot.loc[kind]
            l0s, nmse, ev = pts["l0"].tolist(), pts["nmse"].tolist(), pts["ev"].tolist()
            span = (f"{np.nanmin(l0s):.1f}–{np.nanmax(l0s):.1f} ({len(l0s)} runs)" if len(l0s) > 1
                    else f"{l0s[0]:.1f} (1 run)")
            at = [interpolate_at(l0s, v, target) for v in (nmse, ev)]
            cells = [f"{at[0]:.4f}", f"{at[1]:.3f}"] if math.isfinite(at[0]) else ["outside the sweep"] * 2
            t.rows.append([backbone, f"{_fmt_x(x)}×d", KIND_LABELS.get(kind, kind), span, *cells])
    t.notes = ["Interpolation is linear in log L0 between the two runs of the method's sweep (its default and "
               "swept settings) whose L0 bracket the sparsemax SAE's; no extrapolation."]
    return t


def probing(df: pd.DataFrame) -> Table:
    """Sparse probing accuracy (module docstring)."""
    sub = df[(df["eval"] == "probing") & (df["setting"] == "default")]
    t = Table("probing", "Sparse probing accuracy (balanced one-vs-rest, mean over classes)",
              ["dataset", "representation", "top 1", "top 2", "top 5", "all"])
    for (backbone, dataset), g in sub.groupby(["backbone", "dataset"]):
        where = f"{dataset} ({backbone})"
        t.rows.append([where, "raw activations"] + [_cell(*_stats(g, metric=f"raw_top_{k}")) for k in (1, 2, 5)]
                      + [_cell(*_stats(g, metric="raw_all"))])
        for k in [k for k in KIND_ORDER if k in set(g["kind"])]:
            t.rows.append([where, f"{KIND_LABELS[k]} latents ({_fmt_x(g[g['kind'] == k]['expansion'].iloc[0])}×d)"]
                          + [_cell(*_stats(g, kind=k, metric=f"sae_top_{n}")) for n in (1, 2, 5)] + ["–"])
    t.notes = ["SAEBench recipe: encode every token, mean-pool over real tokens, top-k latents by |mean difference| "
               "on the training split, logistic regression (C = 1); raw rows use the pooled activations."]
    return t


_BUILD: dict[str, Callable[[pd.DataFrame], Table]] = {
    "table_a": table_a, "table_b": table_b, "topn_methods": topn_methods, "guidance": guidance,
    "matched_l0": matched_l0, "probing": probing}
# in the catalogue's order (repro.report.catalogue, which the Snakefile reads)
TABLES: dict[str, Callable[[pd.DataFrame], Table]] = {name: _BUILD[name] for name in TABLE_NAMES}


def render_table(name: str, metrics_csv: str | Path, out_stem: str | Path) -> list[Path]:
    """Build table ``name`` from ``metrics_csv``; write ``<out_stem>.md`` and ``.tex`` atomically."""
    from repro.files import atomic_write

    if name not in TABLES:
        raise ValueError(f"unknown table {name!r}; known: {', '.join(TABLES)}")
    table = TABLES[name](read_metrics(metrics_csv))
    out_stem = Path(out_stem)
    out_stem.parent.mkdir(parents=True, exist_ok=True)
    paths = []
    for suffix, text in ((".md", table.markdown()), (".tex", table.latex())):
        path = out_stem.with_suffix(suffix)
        atomic_write(path, lambda p, text=text: Path(p).write_text(text))
        paths.append(path)
    return paths
