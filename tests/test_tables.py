"""Tables from a tidy metrics frame with known numbers: layout, seed means, the best cell in bold,
matched-L0 interpolation (known answer in log L0, no extrapolation), guidance rows, Markdown and LaTeX."""

from __future__ import annotations

import math

import pandas as pd
import pytest

from repro.report.metrics_csv import COLUMNS
from repro.report.tables import TABLES, interpolate_at, render_table


def row(
    kind, expansion, eval_name, metric, value, setting="default", seed=0, backbone="smollm2-135m", dataset="fortunes"
):
    return dict(
        zip(
            COLUMNS,
            [
                "default",
                f"{kind}/{setting}/x{expansion}/s{seed}",
                backbone,
                dataset,
                "h",
                kind,
                576 * expansion,
                expansion,
                seed,
                setting,
                eval_name,
                metric,
                value,
            ],
            strict=True,
        )
    )


@pytest.fixture
def metrics(tmp_path):
    rows = []
    for i, kind in enumerate(["relu", "jumprelu", "gated", "topk", "batchtopk", "sparsemax_attention"]):
        for x in (1, 2):
            for seed in (0, 1):
                rows.append(row(kind, x, "reconstruction", "nmse", 0.1 * (i + 1) / x + 0.01 * seed, seed=seed))
                rows.append(row(kind, x, "reconstruction", "l0", 10.0 * (i + 1), seed=seed))
                rows.append(row(kind, x, "reconstruction", "ev", 1 - 0.1 * (i + 1) / x, seed=seed))
                rows.append(row(kind, x, "lm_loss", "ce_delta", 0.5 / (i + 1), seed=seed))
    # a TopK sweep at 2x bracketing the sparsemax L0 (60): k=40 (nmse 0.3) and k=90 (nmse 0.2)
    for k, nmse in ((40, 0.3), (90, 0.2)):
        rows += [
            row("topk", 2, "reconstruction", "l0", k, setting=f"k={k}"),
            row("topk", 2, "reconstruction", "nmse", nmse, setting=f"k={k}"),
            row("topk", 2, "reconstruction", "ev", 1 - nmse, setting=f"k={k}"),
        ]
    for kind, on1 in (("relu", 3.0), ("attention_relu", 4.0), ("mlp_sparsemax", 8.0), ("sparsemax_attention", 11.0)):
        for metric, value in (
            ("official/on_1", on1),
            ("official/on_5", 2 * on1),
            ("heldout/on_1", on1 - 1),
            ("heldout/on_5", 2 * on1 - 1),
            ("no_sae", 90.0),
            ("sae", 80.0),
        ):
            rows.append(row(kind, 8, "topn", metric, value, backbone="effnet-lite0", dataset="fashion-mnist"))
    rows += [
        row(
            "sparsemax_attention",
            8,
            "topn",
            f"official/on_1_ci_{b}",
            v,
            backbone="effnet-lite0",
            dataset="fashion-mnist",
        )
        for b, v in (("lo", 9.0), ("hi", 13.0))
    ]
    for kind, setting, l0, on1 in (
        ("topk", "k=24", 24, 2.0),
        ("topk", "guided", 13, 6.0),
        ("sparsemax_attention", "default", 13.2, 11.0),
    ):
        rows += [
            row(kind, 8, "reconstruction", "l0", l0, setting=setting, backbone="effnet-lite0", dataset="fashion-mnist"),
            row(
                kind, 8, "topn", "official/on_1", on1, setting=setting, backbone="effnet-lite0", dataset="fashion-mnist"
            ),
        ]
    path = tmp_path / "metrics.csv"
    pd.DataFrame(rows).to_csv(path, index=False)
    return path


def test_table_a_means_over_seeds_and_bolds_the_best(metrics, tmp_path):
    md, tex = render_table("table_a", metrics, tmp_path / "a")
    text = md.read_text()
    assert "| metric | method | 1×d | 2×d |" in text
    assert "| NMSE | ReLU | **0.1050 ± 0.0071** | **0.0550 ± 0.0071** |" in text  # seeds 0.10 and 0.11
    assert "| CE degradation (nats) | Sparsemax SAE | **0.0833 ± 0.0000** |" in text
    assert "\\begin{tabular}{lrr" in tex.read_text() and "\\pm" in tex.read_text()


def test_table_a_follows_the_backbone_of_the_size_sweep():
    """Table A is drawn from the backbone whose default runs cover the most (kind, size) cells, whatever its
    modality (the embedded default sweeps sizes on vision while a language backbone has a few default runs)."""
    from repro.report.tables import size_sweep_backbone

    kinds = ["relu", "jumprelu", "gated", "topk", "batchtopk", "sparsemax_attention"]
    rows = [row(k, x, "reconstruction", "nmse", 0.1, backbone="effnet-lite0") for k in kinds for x in (1, 2)]
    rows += [row(k, 2, "reconstruction", "nmse", 0.1, backbone="minilm-l6") for k in ("topk", "relu")]
    rows += [row("topk", 2, "reconstruction", "nmse", 0.1, setting="k=8", backbone="minilm-l6")]
    assert size_sweep_backbone(pd.DataFrame(rows)) == "effnet-lite0"
    even = [row(k, 2, "reconstruction", "nmse", 0.1, backbone=b) for k in kinds for b in ("effnet-lite0", "minilm-l6")]
    assert size_sweep_backbone(pd.DataFrame(even)) == "minilm-l6"  # a tie goes to the language backbone
    assert size_sweep_backbone(pd.DataFrame(rows[:0], columns=COLUMNS)) is None


def test_table_b_has_both_protocols(metrics, tmp_path):
    text = render_table("table_b", metrics, tmp_path / "b")[0].read_text()
    assert "| official | Sparsemax SAE | 11.0 [9.0, 13.0] | 22.0 |" in text  # one seed: the bootstrap interval
    assert "| held-out | ReLU | 2.0 | 5.0 |" in text


def test_matched_l0_interpolates_in_log_l0(metrics, tmp_path):
    text = render_table("matched_l0", metrics, tmp_path / "m")[0].read_text()
    # sparsemax at 2x: L0 60; TopK sweep at 2x: (40, 0.3), (40 default, 0.2), (90, 0.2)
    target = 60.0
    assert interpolate_at([40, 90], [0.3, 0.2], target) == pytest.approx(
        0.3 - 0.1 * (math.log(60) - math.log(40)) / (math.log(90) - math.log(40))
    )
    assert math.isnan(interpolate_at([40, 90], [0.3, 0.2], 100.0))  # no extrapolation
    assert "| Sparsemax SAE | 2 | L0 = 60.0 ± 0.0 |" in text
    # one setting: no sweep to interpolate (a kind without a knob, as MLP + sparsemax), said as such
    assert "| ReLU | 2 | 10.0–10.0 (1 settings) | no sweep: one setting (L0 10.0), nothing to interpolate |" in text
    expected = 0.3 - 0.1 * (math.log(60) - math.log(40)) / (math.log(90) - math.log(40))
    assert f"| TopK | 1 | 40.0–90.0 (3 settings) | {expected:.4f} |" in text  # only seed 0 has the sweep


def test_guidance_rows(metrics, tmp_path):
    text = render_table("guidance", metrics, tmp_path / "g")[0].read_text()
    assert "| TopK | guided (K = round(L0 of sparsemax)) | 13.0 | 6.0 |" in text
    assert "| Sparsemax SAE | default | 13.2 | 11.0 [9.0, 13.0] |" in text


def test_every_table_renders_and_unknown_is_refused(metrics, tmp_path):
    for name in TABLES:
        md, tex = render_table(name, metrics, tmp_path / name)
        assert md.read_text().startswith("**") and tex.read_text().startswith("\\begin{table}")
    with pytest.raises(ValueError, match="unknown table"):
        render_table("table_z", metrics, tmp_path / "z")
    with pytest.raises(FileNotFoundError):
        render_table("table_a", tmp_path / "missing.csv", tmp_path / "z")


def test_the_catalogue_names_every_table_figure_and_figure_data_file():
    """The Snakefile reads the report names from repro.report.catalogue (no pandas or matplotlib)."""
    from repro.report import catalogue, figures

    assert tuple(TABLES) == catalogue.TABLE_NAMES + (catalogue.EXTERNAL_TABLE,)
    assert {name: source for name, (_, source) in figures.FIGURES.items()} == catalogue.FIGURE_SOURCES
    sources = set(catalogue.FIGURE_SOURCES.values()) - {"metrics"}
    assert sources <= set(catalogue.FIGURE_DATA)


def test_the_workflow_and_report_modules_import_without_torch():
    """Every cluster job parses the Snakefile twice and report jobs are short: their imports must stay light."""
    import subprocess
    import sys

    code = (
        "import sys; import repro.workflow, repro.report.catalogue, repro.report.tables, repro.report.aggregate, "
        "repro.audit, repro.files; heavy = {'torch', 'matplotlib'} & set(sys.modules); "
        "assert not heavy, heavy"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr


def test_the_external_table_sets_an_imported_sae_beside_ours_at_its_l0(tmp_path):
    """An imported TopK at L0 20 beside our TopK runs at L0 10 (NMSE 0.2) and 40 (0.1): ours at its L0 is
    0.2 + (ln 20 - ln 10) / (ln 40 - ln 10) x (0.1 - 0.2) = 0.15; an imported SAE at L0 100 is outside our
    sweeps; neither enters the other tables."""
    rows = [
        row("topk", 2, "reconstruction", m, v, setting=s, seed=seed)
        for s, l0, nmse in (("k=10", 10.0, 0.2), ("k=40", 40.0, 0.1))
        for seed in (0, 1)
        for m, v in (("l0", l0), ("nmse", nmse))
    ]
    for name, kind, l0, nmse in (("theirs", "topk", 20.0, 0.12), ("dense", "relu", 100.0, 0.05)):
        for metric, value in (
            ("l0", l0),
            ("nmse", nmse),
            ("nmse_ci_lo", nmse - 0.01),
            ("nmse_ci_hi", nmse + 0.01),
            ("ev", 0.9),
            ("dead_fraction", 0.25),
        ):
            rows.append(
                row(kind, 16, "reconstruction", metric, value, setting="external", seed=None)
                | {"run": f"language/external/{name}"}
            )
    path = tmp_path / "m.csv"
    pd.DataFrame(rows).to_csv(path, index=False)
    text = render_table("external", path, tmp_path / "e")[0].read_text()
    assert (
        "| theirs | smollm2-135m (fortunes) | h | TopK | 9216 | 20.0 | 0.1200 [0.1100, 0.1300] | 0.900 | 25.0% "
        "| TopK ×2 0.1500 |" in text
    )
    assert "| dense | smollm2-135m (fortunes) | h | ReLU | 9216 | 100.0 |" in text and "outside our sweeps" in text
    assert "theirs" not in render_table("matched_l0", path, tmp_path / "m")[0].read_text()
