"""Paper audit: the reference YAML, cells on the paper's setup (exact paper numbers reproduce, a perturbed cell
fails), the offline default (every cell not comparable, claims still evaluated), missing data, seed means,
the markdown table and the CSV errors."""

from __future__ import annotations

import math
from pathlib import Path

import pandas as pd
import pytest

from repro.audit import (
    COLUMNS,
    audit_from_csv,
    format_markdown,
    load_reference,
    read_metrics,
    run_audit,
    strict_failures,
    write_audit,
)

REF = load_reference()
HOOKS = {
    "gpt2-small": "resid.8",
    "clip-vit-b16": "vision.layers.10",
    "smollm2-135m": "resid.20",
    "effnet-lite0": "head",
}
D_IN = {"gpt2-small": 768, "clip-vit-b16": 768, "smollm2-135m": 576, "effnet-lite0": 1280}


def row(
    backbone: str,
    dataset: str,
    kind: str,
    expansion: int,
    ev: str,
    metric: str,
    value: float,
    *,
    seed: int = 0,
    setting: str = "default",
    config: str = "paper",
) -> dict:
    return {
        "config": config,
        "run": f"{backbone}-{kind}-x{expansion}-{setting}-s{seed}",
        "backbone": backbone,
        "dataset": dataset,
        "hook": HOOKS[backbone],
        "kind": kind,
        "d_sae": expansion * D_IN[backbone],
        "expansion": expansion,
        "seed": seed,
        "setting": setting,
        "eval": ev,
        "metric": metric,
        "value": value,
    }


def paper_frame() -> pd.DataFrame:
    """Every recovered cell at its paper value, plus Food101 fixed-K values inside the paper's range."""
    rows = [
        row(c["backbone"], c["dataset"], c["kind"], c["expansion"], c["eval"], c["metric"], c["paper"])
        for c in REF["cells"]
    ]
    for kind, setting, v in [
        ("topk", "k=24", 0.99),
        ("topk", "k=32", 8.64),
        ("batchtopk", "k=24", 2.5),
        ("batchtopk", "k=32", 4.0),
    ]:
        rows.append(row("clip-vit-b16", "food101", kind, 64, "topn", "official/on_1", v, setting=setting))
    return pd.DataFrame(rows)


def default_frame(c1_holds: bool = False) -> pd.DataFrame:
    """Offline analogue: smollm2-135m/fortunes (NMSE, L0 quantiles) and effnet-lite0/fashion-mnist (top-n)."""
    rows = []
    for e in (4, 8):
        nmse = {
            "relu": 0.20,
            "jumprelu": 0.15,
            "gated": 0.25,
            "topk": 0.10,
            "batchtopk": 0.09,
            "sparsemax_attention": 0.05 if c1_holds else 0.12,
        }
        for kind, v in nmse.items():
            rows.append(row("smollm2-135m", "fortunes", kind, e, "reconstruction", "nmse", v, config="default"))
            rows.append(row("smollm2-135m", "fortunes", kind, e, "reconstruction", "l0", 32.0, config="default"))
        rho = {"sparsemax_attention": 0.40, "relu": 0.10, "jumprelu": 0.20, "gated": 0.15, "batchtopk": 0.05}
        rows += [
            row("smollm2-135m", "fortunes", k, e, "reconstruction", "l0_complexity_rho", v, config="default")
            for k, v in rho.items()
        ]
    top = {"relu": 5.0, "attention_relu": 6.0, "mlp_sparsemax": 12.0, "sparsemax_attention": 20.0}
    for kind, v in top.items():
        for n in (1, 5, 10, 50):
            rows.append(
                row("effnet-lite0", "fashion-mnist", kind, 16, "topn", f"official/on_{n}", v + n, config="default")
            )
    for setting, v in (("k=24", 9.0), ("default", 11.0), ("guided", 14.0)):
        rows.append(
            row(
                "effnet-lite0",
                "fashion-mnist",
                "topk",
                16,
                "topn",
                "official/on_1",
                v,
                setting=setting,
                config="default",
            )
        )
    return pd.DataFrame(rows)


def by_item(rows: list[dict]) -> dict[str, dict]:
    return {r["item"]: r for r in rows}


def claim_rows(rows: list[dict], cid: str) -> list[dict]:
    return [r for r in rows if r["type"] == "claim" and r["id"] == cid]


# ----- (f) reference --------------------------------------------------------------------------------------
def test_reference_has_every_recovered_number():
    cells = REF["cells"]
    a = [c for c in cells if c["table"] == "Table A"]
    b = [c for c in cells if c["table"] == "Table B"]
    assert len(a) == 24 and len(b) == 16 and len({c["id"] for c in cells}) == len(cells)
    assert {c["expansion"] for c in a} == {4, 8, 16, 32} and all(c["d_sae"] == 768 * c["expansion"] for c in a)
    gated = {c["expansion"]: c["paper"] for c in a if c["kind"] == "gated"}
    assert gated == {4: 0.078, 8: 0.092, 16: 0.129, 32: 0.489}
    assert {c["kind"] for c in b} == {"relu", "attention_relu", "mlp_sparsemax", "sparsemax_attention"}
    assert next(c["paper"] for c in b if c["id"] == "B/sparsemax_attention/on_50") == 59.95
    assert next(c["paper"] for c in cells if c["table"] == "Food101") == 26.11
    assert REF["ranges"][0]["paper_range"] == [0.99, 8.64]
    for c in cells + REF["ranges"]:
        assert c["source"] == "PN" and c["checked_against_pdf"] is False and "second_hand" in c["caveats"]
        assert c["tolerance"] in REF["tolerances"] and all(k in REF["caveats"] for k in c["caveats"])
        assert c["protocol"] == ("official" if c["eval"] == "topn" else None)
    assert all(("zigzag" in c["caveats"]) == (c["kind"] in ("topk", "batchtopk", "sparsemax_attention")) for c in a)
    assert {c["id"] for c in REF["claims"]} == {"C1", "C1-dense", "C3", "C6", "C7"}
    assert REF["sources"]["PN"]["url"].startswith("https://")


# ----- (a) paper numbers reproduce themselves --------------------------------------------------------------
def test_paper_numbers_reproduce():
    rows = run_audit(paper_frame(), config="paper")
    cells = [r for r in rows if r["type"] in ("cell", "range")]
    assert len(cells) == 42 and all(r["verdict"] == "reproduced" and r["comparable"] for r in cells)
    assert all(r["delta"] == pytest.approx(0.0, abs=1e-12) for r in cells if r["type"] == "cell")
    (c1,) = claim_rows(rows, "C1")
    (c3,) = claim_rows(rows, "C3")
    assert c1["verdict"] == "reproduced" and c1["comparable"] and c1["delta"] == pytest.approx(0.006)  # 0.010 - 0.004
    assert c3["verdict"] == "reproduced" and c3["delta"] == pytest.approx(42.13 - 39.73)
    for cid in ("C1-dense", "C6", "C7"):  # no L0 / guided numbers in the paper
        assert [r["verdict"] for r in claim_rows(rows, cid)] == ["no data"]
    assert strict_failures(rows) == []


# ----- (b) a perturbed cell fails ----------------------------------------------------------------------------
def test_perturbed_cell_is_not_reproduced():
    df = paper_frame()
    hit = (df["kind"] == "gated") & (df["expansion"] == 32)
    df.loc[hit, "value"] = 0.489 * 1.3  # 30 % off, tolerance max(25 %, 0.01)
    ok = (df["kind"] == "relu") & (df["expansion"] == 4)
    df.loc[ok, "value"] = 0.064 + 0.009  # inside the absolute floor 0.01
    rows = by_item(run_audit(df))
    bad = rows["Table A, Gated, M=24576 NMSE"]
    assert bad["verdict"] == "not reproduced" and bad["delta"] == pytest.approx(0.3 * 0.489)
    assert "tolerance" in bad["reason"]
    assert rows["Table A, ReLU, M=3072 NMSE"]["verdict"] == "reproduced"
    assert [r["item"] for r in strict_failures(rows.values())] == ["Table A, Gated, M=24576 NMSE"]


# ----- (c) offline default: not comparable, claims evaluated ------------------------------------------------
def test_default_config_is_not_comparable_but_claims_are_checked():
    rows = run_audit(default_frame(c1_holds=False), config="default")
    cells = [r for r in rows if r["type"] in ("cell", "range")]
    assert all(r["verdict"] == "not comparable" and not r["comparable"] for r in cells)
    items = by_item(cells)
    a = items["Table A, ReLU, M=3072 NMSE"]
    assert "different backbone" in a["reason"] and "smollm2-135m" in a["reason"] and "gpt2-small" in a["reason"]
    assert a["ours"] == pytest.approx(0.20) and a["delta"] is None  # analogue: relu at expansion 4 on SmolLM2
    far = items["Table A, ReLU, M=24576 NMSE"]
    assert far["ours"] == pytest.approx(0.20) and "nearest to 32" in far["reason"]
    b = items["Table B, Sparsemax SAE, on-5"]
    assert "effnet-lite0" in b["reason"] and "clip-vit-b16" in b["reason"] and b["ours"] == pytest.approx(25.0)
    (c1,) = claim_rows(rows, "C1")
    assert c1["verdict"] == "not reproduced" and not c1["comparable"] and "smollm2-135m/fortunes" in c1["item"]
    assert c1["delta"] == pytest.approx(0.09 - 0.12)
    assert [r["verdict"] for r in claim_rows(rows, "C1-dense")] == ["not reproduced"]
    assert [r["verdict"] for r in claim_rows(rows, "C3")] == ["reproduced"]
    (c6,) = claim_rows(rows, "C6")
    assert c6["verdict"] == "reproduced" and c6["delta"] == pytest.approx(14.0 - 11.0)
    assert "k=32 (default)" in c6["ours"]
    (c7,) = claim_rows(rows, "C7")
    assert c7["verdict"] == "reproduced" and c7["delta"] == pytest.approx(0.40 - 0.20)  # vs JumpReLU, same L0
    assert {r["id"] for r in strict_failures(rows)} == {"C1", "C1-dense"}
    assert strict_failures(rows, paper_setup_only=True) == []
    assert claim_rows(run_audit(default_frame(c1_holds=True)), "C1")[0]["verdict"] == "reproduced"


def test_density_matched_claim_skips_sparser_baselines():
    df = default_frame(c1_holds=False)
    dense = (df["metric"] == "l0") & (df["kind"] == "sparsemax_attention")
    df.loc[dense, "value"] = 100.0  # sparsemax denser than every baseline: nothing to compare at matched density
    (row_,) = claim_rows(run_audit(df), "C1-dense")
    assert row_["verdict"] == "no data" and "sparser" in row_["reason"]


def test_same_backbone_other_dataset_and_heldout_info():
    rows = [
        row("clip-vit-b16", "food101", "relu", 64, "topn", "official/on_1", 4.0),
        row("clip-vit-b16", "food101", "relu", 64, "topn", "heldout/on_1", 2.0),
    ]
    cell = by_item(run_audit(pd.DataFrame(rows)))["Table B, ReLU SAE, on-1"]
    assert cell["verdict"] == "not comparable" and cell["reason"].startswith("different dataset")
    assert cell["ours"] == pytest.approx(4.0)
    imagenet = [r | {"dataset": "imagenet"} for r in rows]
    cell = by_item(run_audit(pd.DataFrame(imagenet)))["Table B, ReLU SAE, on-1"]
    assert cell["verdict"] == "reproduced" and "heldout protocol: 2" in cell["reason"]


# ----- (d) no data ---------------------------------------------------------------------------------------------
def test_missing_runs_are_no_data():
    df = paper_frame()
    df = df[~((df["kind"] == "gated") & (df["expansion"] == 32))]
    rows = run_audit(df)
    gated = by_item(rows)["Table A, Gated, M=24576 NMSE"]
    assert gated["verdict"] == "no data" and "no run of kind gated at expansion 32" in gated["reason"]
    assert gated["ours"] == pytest.approx(0.129)  # the nearest expansion on the same setup, shown as analogue
    empty = run_audit(paper_frame(), config="nonexistent")
    assert {r["verdict"] for r in empty} == {"no data"}
    (c7,) = claim_rows(empty, "C7")
    assert c7["ours"] is None and c7["delta"] is None and c7["n_seeds"] == 0


# ----- (e) seeds ---------------------------------------------------------------------------------------------
def test_seeds_are_averaged_and_nan_dropped():
    df = paper_frame()
    relu = df[(df["kind"] == "relu") & (df["expansion"] == 4)].iloc[0].to_dict()
    df = df[~((df["kind"] == "relu") & (df["expansion"] == 4))]
    extra = [
        relu | {"seed": s, "run": f"r{s}", "value": v} for s, v in ((0, 0.060), (1, 0.070), (2, 0.080), (3, math.nan))
    ]
    rows = by_item(run_audit(pd.concat([df, pd.DataFrame(extra)], ignore_index=True)))
    r = rows["Table A, ReLU, M=3072 NMSE"]
    assert r["ours"] == pytest.approx(0.070) and r["n_seeds"] == 3 and r["verdict"] == "reproduced"


# ----- (f) markdown, writing ---------------------------------------------------------------------------------
def test_markdown_has_one_table_row_per_audit_row(tmp_path: Path):
    rows = run_audit(default_frame())
    md = format_markdown(rows, {"source": "metrics.csv", "config": "default"})
    table = [line for line in md.splitlines() if line.startswith("|")]
    assert len(table) == len(rows) + 2
    assert table[0] == "| claim or cell | paper | ours | delta | verdict | reason |"
    assert "second-hand" in md and "not checked against the paper's PDF" in md and "zigzag" in md
    for suffix in (".md", ".json", ".csv"):
        out = write_audit(rows, tmp_path / f"audit{suffix}")
        assert out.read_text() and not list(tmp_path.glob(".*.tmp"))
    assert (tmp_path / "audit.md").read_text() == format_markdown(rows)
    assert len(pd.read_csv(tmp_path / "audit.csv")) == len(rows)


def test_audit_from_csv(tmp_path: Path):
    csv = tmp_path / "metrics.csv"
    paper_frame().to_csv(csv, index=False)
    rows, md = audit_from_csv(csv, tmp_path / "out" / "audit.md")
    assert (tmp_path / "out" / "audit.md").read_text() == md and strict_failures(rows) == []
    assert sum(r["verdict"] == "reproduced" for r in rows) >= 44


# ----- (g) errors --------------------------------------------------------------------------------------------
def test_missing_column_or_file_raises_value_error(tmp_path: Path):
    csv = tmp_path / "metrics.csv"
    paper_frame().drop(columns=["setting"]).to_csv(csv, index=False)
    with pytest.raises(ValueError, match=r"metrics\.csv.*setting"):
        read_metrics(csv)
    with pytest.raises(ValueError, match="setting"):
        run_audit(paper_frame().drop(columns=["setting"]))
    with pytest.raises(ValueError, match="not found"):
        audit_from_csv(tmp_path / "absent.csv", tmp_path / "audit.md")
    (tmp_path / "empty.csv").write_text("")
    with pytest.raises(ValueError, match="empty.csv"):
        read_metrics(tmp_path / "empty.csv")
    assert len(COLUMNS) == 13


# ----- (g) sanity gates: a claim that holds or fails on unsound runs is inconclusive ------------------------
def test_unconverged_runs_make_a_claim_inconclusive():
    df = default_frame(c1_holds=True)
    runs = df[(df["backbone"] == "smollm2-135m")][["run", "kind", "expansion"]].drop_duplicates()
    extra = [
        row(
            "smollm2-135m",
            "fortunes",
            r.kind,
            r.expansion,
            "train",
            "converged",
            0.0 if r.kind == "topk" else 1.0,
            config="default",
        )
        for r in runs.itertuples()
    ]
    rows = run_audit(pd.concat([df, pd.DataFrame(extra)]), config="default")
    (c1,) = claim_rows(rows, "C1")
    assert c1["verdict"] == "inconclusive" and "not converged: topk default ×4" in c1["reason"]
    assert c1["delta"] == pytest.approx(0.09 - 0.05)  # the comparison itself is still shown


def test_overlapping_seed_spreads_make_a_claim_inconclusive():
    df = default_frame(c1_holds=True)
    seed1 = df[df["backbone"] == "smollm2-135m"].copy()
    seed1["seed"] = 1
    seed1.loc[(seed1["kind"] == "sparsemax_attention") & (seed1["metric"] == "nmse"), "value"] = 0.12
    rows = run_audit(pd.concat([df, seed1]), config="default")
    (c1,) = claim_rows(rows, "C1")  # sparsemax 0.05 / 0.12 (mean 0.085 ± 0.049) vs batchtopk 0.09 ± 0
    assert c1["verdict"] == "inconclusive" and "spreads overlap" in c1["reason"]
    seed1.loc[(seed1["kind"] == "sparsemax_attention") & (seed1["metric"] == "nmse"), "value"] = 0.051
    (c1,) = claim_rows(run_audit(pd.concat([df, seed1]), config="default"), "C1")
    assert c1["verdict"] == "reproduced"  # separated by far more than the spread


def test_a_degenerate_topn_setup_makes_a_claim_inconclusive():
    df = default_frame()
    gate = [
        row(
            "effnet-lite0", "fashion-mnist", k, 16, "topn", "gate_usable", 0.0 if k == "relu" else 1.0, config="default"
        )
        for k in ("relu", "attention_relu", "mlp_sparsemax", "sparsemax_attention")
    ]
    (c3,) = claim_rows(run_audit(pd.concat([df, pd.DataFrame(gate)]), config="default"), "C3")
    assert c3["verdict"] == "inconclusive" and "degenerate top-n setup" in c3["reason"]
    assert "relu default" in c3["reason"]


def test_calibration_compares_with_the_baseline_setting_nearest_in_l0():
    df = default_frame()
    far = (df["kind"] == "jumprelu") & (df["metric"] == "l0")
    df.loc[far, "value"] = 200.0  # JumpReLU's only setting is 6x denser: not a match, left out with a note
    df.loc[(df["kind"] == "relu") & (df["metric"] == "l0"), "value"] = 100.0  # ReLU's default: denser than its sweep
    sweep = [
        row("smollm2-135m", "fortunes", "relu", e, "reconstruction", m, v, setting="l1_coefficient=9", config="default")
        for e in (4, 8)
        for m, v in (("l0", 30.0), ("l0_complexity_rho", 0.45))
    ]
    (c7,) = claim_rows(run_audit(pd.concat([df, pd.DataFrame(sweep)]), config="default"), "C7")
    assert c7["verdict"] == "not reproduced" and c7["delta"] == pytest.approx(0.40 - 0.45)
    assert "relu l1_coefficient=9 (L0 30)" in c7["ours"] and "no jumprelu setting within ×2" in c7["reason"]


def test_guidance_claim_is_judged_with_its_spread():
    df = default_frame()
    seed1 = df[(df["eval"] == "topn") & (df["kind"] == "topk")].copy()
    seed1["seed"] = 1
    seed1.loc[seed1["setting"] == "guided", "value"] = 8.0  # guided 14 / 8 against default 11 / 11
    (c6,) = claim_rows(run_audit(pd.concat([df, seed1]), config="default"), "C6")
    assert c6["verdict"] == "inconclusive" and "guided vs k=32: spreads overlap" in c6["reason"]
