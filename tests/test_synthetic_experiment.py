"""The ground-truth benchmark runner: config validation naming the key, and a tiny end-to-end run that
writes the results, the table and both figures."""

from __future__ import annotations

import copy
import json

import pytest
import yaml

from repro.experiments.synthetic import Method, SyntheticConfig, resolve_hparams, run_synthetic

TINY = {
    "data": {
        "d_in": 12,
        "n_features": 24,
        "counts": {"kind": "mixture", "simple": 1, "complex": 4, "p_complex": 0.5},
        "magnitude": {"kind": "uniform", "low": 0.5, "high": 1.5},
        "noise": 0.01,
        "seed": 0,
    },
    "d_sae": 96,
    "train": {"steps": 40, "batch_size": 128, "lr": 0.01, "warmup_steps": 5},
    "eval_tokens": 1024,
    "seeds": [0, 1],
    "search_steps": 2,
    "step_sweep": [20, 40],
    "methods": [
        {"name": "topk", "kind": "topk", "hparams": {"k": "mean"}},
        {"name": "relu", "kind": "relu", "hparams": {"l1_coefficient": "match_l0"}},
        {"name": "sparsemax", "kind": "sparsemax_attention"},
    ],
}


def test_default_config_is_valid():
    cfg = SyntheticConfig.from_dict(yaml.safe_load(open("config/synthetic.yaml")))
    assert len(cfg.methods) >= 10 and len(cfg.seeds) >= 3
    assert {m.kind for m in cfg.methods} >= {
        "topk",
        "batchtopk",
        "relu",
        "jumprelu",
        "gated",
        "sparsemax_attention",
        "mlp_sparsemax",
        "attention_relu",
        "sparsemax_attention_paper",
    }


@pytest.mark.parametrize(
    ("edit", "key"),
    [
        (lambda c: c.update(colour="red"), "colour"),
        (lambda c: c.pop("d_sae"), "d_sae"),
        (lambda c: c["methods"].append({"kind": "nope"}), "methods[3].kind"),
        (lambda c: c["data"].update(n_features=0), "n_features"),
        (lambda c: c["train"].update(momentum=0.9), "train"),
        (lambda c: c.update(eval_tokens=0), "eval_tokens"),
        (lambda c: c["methods"].append({"name": "topk", "kind": "relu"}), "unique"),
    ],
)
def test_bad_configs_name_the_key(edit, key):
    raw = copy.deepcopy(TINY)
    edit(raw)
    with pytest.raises(ValueError, match=key.replace("[", r"\[").replace("]", r"\]")):
        SyntheticConfig.from_dict(raw)


def test_symbolic_k():
    assert resolve_hparams(Method("a", "topk", {"k": "double"}), 3.4, 100)["k"] == 7
    assert resolve_hparams(Method("a", "topk", {"k": "half"}), 3.4, 100)["k"] == 2
    with pytest.raises(ValueError, match="k='most'"):
        resolve_hparams(Method("a", "topk", {"k": "most"}), 3.4, 100)


def test_tiny_run_writes_results_table_and_figures(tmp_path):
    cfg = SyntheticConfig.from_dict(TINY)
    result = run_synthetic(cfg, tmp_path / "out", tmp_path / "fig", progress=False)
    assert [r["method"] for r in result["summary"]] == ["topk", "relu", "sparsemax"]
    assert len(result["runs"]) == 6
    saved = json.loads((tmp_path / "out" / "results.json").read_text())
    assert saved["config"]["d_sae"] == 96 and saved["provenance"]["packages"]["torch"]
    topk = [r for r in saved["runs"] if r["method"] == "topk"]
    assert all(r["hparams"]["k"] == round(saved["mean_true_count"]) for r in topk)
    assert all(r["reconstruction"]["l0"] <= r["hparams"]["k"] for r in topk)
    relu = [r for r in saved["runs"] if r["method"] == "relu"]
    assert all(r["penalty_search"] for r in relu)
    for r in relu:  # searched on the validation sample, with the outcome flagged
        search = r["penalty_search"]
        assert search["measured_on"] == "validation sample" and isinstance(search["matched"], bool)
        assert r["hparams"]["l1_coefficient"] in [p["penalty"] for p in search["probes"]]
    for r in saved["runs"]:
        assert 0 <= r["dictionary"]["mcc"] <= 1 and r["simple_vs_complex"]["simple"]["n"] > 0
    assert 0 < saved["chance_mcc"]["mean"] < 1 and len(saved["chance_mcc"]["values"]) == 2
    assert {(s["method"], s["steps"]) for s in saved["step_sweep"]} == {
        (m, n) for m in ("topk", "relu", "sparsemax") for n in (20, 40)
    }
    assert set(saved["plateau"]) == {"topk", "relu", "sparsemax"}
    assert all(isinstance(p["plateaued"], bool) for p in saved["plateau"].values())
    table = (tmp_path / "out" / "table.md").read_text()
    assert "| sparsemax" in table and "mcc" in table and "intercept" in table
    assert "| chance: random dictionary of the same width |" in table
    for stem in ("synthetic_l0_vs_count", "synthetic_mcc"):
        for ext in ("pdf", "png"):
            assert (tmp_path / "fig" / f"{stem}.{ext}").stat().st_size > 1000


def test_table_marks_unmatched_searches_and_unplateaued_methods():
    from repro.experiments.synthetic import SUMMARY_COLUMNS, format_table, plateau

    def row(method, matched):
        r = {"method": method, "search_matched": matched}
        for col, _ in SUMMARY_COLUMNS:
            r[col], r[f"{col}_std"] = 0.5, 0.0
        return r

    sweep = [
        {"method": "a", "steps": s, "ev": ev, "l0": 4.0, "mcc": mcc}
        for s, ev, mcc in ((400, 0.90, 0.80), (800, 0.95, 0.86))
    ] + [{"method": "b", "steps": s, "ev": 0.9, "l0": 4.0, "mcc": 0.8} for s in (400, 800)]
    p = plateau(sweep)
    assert not p["a"]["plateaued"] and p["a"]["delta_mcc"] == pytest.approx(0.06) and p["b"]["plateaued"]
    text = format_table([row("a", float("nan")), row("b", 0.5)], 4.0, chance=0.41, plateaus=p)
    assert "| a (not plateaued (400 → 800 steps: ΔEV +0.050, ΔMCC +0.060)) |" in text
    assert "| b (L0 search not matched on 50% of seeds: not an L0-matched baseline) |" in text
    assert "| chance: random dictionary of the same width |" in text and "0.410" in text
