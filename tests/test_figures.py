"""Figures (:mod:`repro.report.figures`) from small synthetic metrics tables and figure-data dicts."""

from __future__ import annotations

import json
from pathlib import Path

import matplotlib.image as mpimg
import numpy as np
import pandas as pd
import pytest
from matplotlib.colors import to_rgb
from matplotlib.figure import Figure

from repro.report import figures as F

KINDS = ("sparsemax_attention", "topk", "relu")
ALL_KINDS = (
    "relu",
    "jumprelu",
    "gated",
    "topk",
    "batchtopk",
    "sparsemax_attention",
    "mlp_sparsemax",
    "attention_relu",
    "sparsemax_attention_paper",
)


def _rows(
    backbone: str,
    kind: str,
    expansion: int,
    seed: int,
    setting: str,
    metrics: dict[str, dict[str, float]],
    dataset: str = "fortunes",
) -> list[dict]:
    run = f"{backbone}/{kind}/{setting}/x{expansion}/s{seed}"
    base = {
        "config": "test",
        "run": run,
        "backbone": backbone,
        "dataset": dataset,
        "hook": "resid.20",
        "kind": kind,
        "d_sae": 576 * expansion,
        "expansion": expansion,
        "seed": seed,
        "setting": setting,
    }
    return [base | {"eval": ev, "metric": m, "value": v} for ev, d in metrics.items() for m, v in d.items()]


def make_metrics(lm_loss: bool = True) -> pd.DataFrame:
    """Two backbones (a causal LM with lm_loss, a vision model without), 3 kinds, 2 seeds, a size and an L1/k sweep."""
    rng = np.random.default_rng(0)
    rows = []
    for bb in ("smollm2-135m", "effnet-lite0"):
        for kind in KINDS:
            for x in (1, 2, 4):
                for seed in (0, 1):
                    nmse = 0.4 / x**0.5 * (0.8 if kind == "sparsemax_attention" else 1) + rng.uniform(0, 0.02)
                    l0 = 30.0 + rng.uniform(-3, 3)
                    m = {
                        "reconstruction": {
                            "nmse": nmse,
                            "ev": 1 - nmse,
                            "mse": 100 * nmse,
                            "l0": l0,
                            "l0_p5": 10,
                            "l0_p50": l0,
                            "l0_p95": 60,
                        }
                    }
                    if lm_loss and bb == "smollm2-135m":
                        m["lm_loss"] = {"ce_delta": nmse * 2, "ce_loss_score": 1 - nmse}
                    if bb == "effnet-lite0":
                        m["topn"] = {"official/on_1": 60 + x}
                    rows += _rows(bb, kind, x, seed, "default", m)
        sweeps = {"relu": ("l1_coefficient", (1e-4, 1e-3, 1e-2)), "topk": ("k", (8, 16, 64))}
        for kind, (key, values) in sweeps.items():
            for i, v in enumerate(values):
                for seed in (0, 1):
                    l0 = float(v) if key == "k" else 200.0 / (i + 1) ** 2
                    nmse = 0.5 / np.sqrt(l0) + rng.uniform(0, 0.01)
                    rows += _rows(bb, kind, 2, seed, f"{key}={v:g}", {"reconstruction": {"nmse": nmse, "l0": l0}})
    return pd.DataFrame(rows)


def make_latents() -> dict:
    rng = np.random.default_rng(1)
    runs = {}
    for kind in KINDS:
        n = 300
        ent = rng.uniform(0, 2.3, n).tolist()
        ent[:20] = [None] * 20
        runs[f"vision/{kind}/default/x2/s0"] = {
            "kind": kind,
            "backbone": "effnet-lite0",
            "dataset": "mnist",
            "expansion": 2,
            "firing_rate": (10 ** rng.uniform(-4, -0.5, n)).tolist(),
            "mean_act": (10 ** rng.normal(0, 0.5, n)).tolist(),
            "entropy": ent,
            "purity": rng.uniform(0, 1, n).tolist(),
        }
    return {"runs": runs}


def make_training_curves() -> dict:
    runs = {}
    step = list(range(0, 200, 10))
    for i, kind in enumerate(KINDS):
        for setting in ("default", "k=16") if kind == "topk" else ("default",):
            s = np.asarray(step, dtype=float) + 1
            a = 1 + 0.3 * i + 0.2 * (setting != "default")
            runs[f"language/{kind}/{setting}/x2/s0"] = {
                "kind": kind,
                "backbone": "smollm2-135m",
                "expansion": 2,
                "setting": setting,
                "step": step,
                "loss": (5 * a / np.sqrt(s)).tolist(),
                "mse": (4 * a / np.sqrt(s)).tolist(),
                "l0": (30 * a + 100 / s).tolist(),
            }
    return {"runs": runs}


def _image(rng: np.random.Generator) -> list[list[int]]:
    return rng.integers(0, 256, (28, 28)).tolist()


def _example(rng: np.random.Generator, i: int, l0: float, vision: bool, text: str) -> dict:
    return {"id": i, "l0": l0, "text": None if vision else text, "image": _image(rng) if vision else None}


def make_l0(empty_hist: bool = False) -> dict:
    rng = np.random.default_rng(2)
    text = "The quick brown fox jumps over the lazy dog, again and again, " * 4
    runs = {}
    for role, bb in (("language", "smollm2-135m"), ("vision", "effnet-lite0")):
        vision = role == "vision"
        for kind, setting in (("sparsemax_attention", "default"), ("topk", "k=24"), ("batchtopk", "default")):
            if kind == "sparsemax_attention":
                hist = np.bincount(rng.poisson(18, 2000), minlength=60).tolist()
            elif kind == "topk":
                hist = [0] * 24 + [1000] + [0] * 10
            else:
                hist = np.bincount(rng.poisson(32, 2000), minlength=80).tolist()
            if empty_hist and kind == "batchtopk":
                hist = []
            sm = kind == "sparsemax_attention"
            runs[f"{role}/{kind}/{setting}/x2/s0"] = {
                "kind": kind,
                "backbone": bb,
                "dataset": "d",
                "expansion": 2,
                "setting": setting,
                "hist": hist,
                "fewest": [_example(rng, i, 2.0 + i, vision, text) for i in range(3)] if sm else [],
                "most": [_example(rng, 10 + i, 50.0 - i, vision, text) for i in range(3)] if sm else [],
            }
    return {"runs": runs}


def make_concepts() -> dict:
    rng = np.random.default_rng(3)
    img_latents = [
        {
            "latent": lat,
            "examples": [
                {
                    "id": i,
                    "label": f"digit {i % 10}",
                    "value": float(5 - i),
                    "image": _image(rng),
                    "token_map": np.where(rng.random((4, 4)) > 0.7, rng.random((4, 4)), 0).tolist(),
                    "tokens": None,
                    "token_acts": None,
                }
                for i in range(5)
            ],
        }
        for lat in (3, 17, 42)
    ]
    words = "the cat sat on the mat while the dog barked at the mailman $5 and left".split()
    txt_latents = [
        {
            "latent": lat,
            "examples": [
                {
                    "id": i,
                    "label": "fortune",
                    "value": float(3 - i),
                    "image": None,
                    "token_map": None,
                    "tokens": [" " + w for w in words],
                    "token_acts": np.where(rng.random(len(words)) > 0.7, rng.random(len(words)), 0).tolist(),
                }
                for i in range(4)
            ],
        }
        for lat in (5, 9)
    ]
    return {
        "runs": {
            "vision/sparsemax_attention/default/x2/s0": {
                "kind": "sparsemax_attention",
                "modality": "image",
                "latents": img_latents,
            },
            "language/topk/default/x2/s0": {"kind": "topk", "modality": "text", "latents": txt_latents},
        }
    }


DATA = {
    "latents": make_latents,
    "training_curves": make_training_curves,
    "l0_distribution": make_l0,
    "concepts": make_concepts,
}


def _check(paths: list[Path], out: Path) -> np.ndarray:
    assert [p.name for p in paths] == [out.name + ".pdf", out.name + ".png"]
    assert all(p.is_file() and p.stat().st_size > 1000 for p in paths)
    assert paths[0].read_bytes()[:5] == b"%PDF-"
    img = mpimg.imread(paths[1])
    assert img.ndim == 3 and 300 < img.shape[0] < 6000 and 500 < img.shape[1] < 6000
    assert not [p.name for p in out.parent.iterdir() if ".tmp" in p.name]  # atomic: no temporary files left
    return img


def test_kind_colors_cover_all_kinds_and_are_distinct():
    rgb = {to_rgb(F.kind_color(k)) for k in ALL_KINDS}
    assert len(rgb) == len(ALL_KINDS) and to_rgb(F.UNKNOWN_COLOR) not in rgb
    assert len({F.kind_label(k) for k in ALL_KINDS}) == len(ALL_KINDS)
    assert F.kind_label("sparsemax_attention") == "Sparsemax SAE"
    assert F.kind_style("sparsemax_attention")["linewidth"] > F.kind_style("relu")["linewidth"]
    assert F.kind_style("sparsemax_attention")["marker"] == "*"


def test_nmse_vs_size_without_lm_loss_and_empty(tmp_path):
    out = tmp_path / "a"
    _check(F.figure_nmse_vs_size(make_metrics(lm_loss=False), out), out)
    out = tmp_path / "b"
    _check(F.figure_nmse_vs_size(pd.DataFrame(columns=["eval", "metric", "value"]), out), out)


def test_setting_label():
    assert F._setting_label("l1_coefficient=0.0001") == "0.0001" and F._setting_label("k=24") == "k=24"


def test_l0_distribution_empty_hist_and_no_runs(tmp_path):
    out = tmp_path / "l0_empty"
    _check(F.figure_l0_distribution(make_l0(empty_hist=True), out), out)
    out = tmp_path / "l0_none"
    _check(F.figure_l0_distribution({"runs": {}}, out), out)


def test_fixed_k():
    hist = np.array([0, 0, 0, 5, 0], dtype=float)
    assert F._fixed_k({"kind": "topk", "setting": "k=24"}, hist) == 24
    assert F._fixed_k({"kind": "topk", "setting": "default"}, hist) == 3
    assert F._fixed_k({"kind": "batchtopk", "setting": "guided", "k": 7}, hist) == 7


def test_firing_vs_activation_empty_run(tmp_path):
    out = tmp_path / "firing"
    data = make_latents()
    next(iter(data["runs"].values()))["firing_rate"] = []
    _check(F.figure_firing_vs_activation(data, out), out)


def test_concepts_without_latents(tmp_path):
    out = tmp_path / "concepts"
    data = make_concepts()
    data["runs"]["language/topk/default/x2/s0"]["latents"] = []
    _check(F.figure_concepts(data, out, max_latents=2, max_examples=3), out)


def test_training_curves_empty(tmp_path):
    out = tmp_path / "curves"
    _check(F.figure_training_curves({}, out), out)


def test_save_figure_atomic_overwrite_and_suffix(tmp_path):
    fig = Figure(figsize=(4, 3))
    fig.subplots().plot([0, 1], [1, 0])
    out = tmp_path / "sub" / "fig.pdf"
    paths = F.save_figure(fig, out)
    assert paths == [tmp_path / "sub" / "fig.pdf", tmp_path / "sub" / "fig.png"]
    assert F.save_figure(fig, out) == paths
    assert sorted(p.name for p in (tmp_path / "sub").iterdir()) == ["fig.pdf", "fig.png"]
    assert mpimg.imread(paths[1]).shape[:2] == (450, 600)  # dpi 150
    (tmp_path / "ref").write_bytes(b"")  # permissions as for any new file (umask), not mkstemp's 0600
    assert {p.stat().st_mode & 0o777 for p in paths} == {(tmp_path / "ref").stat().st_mode & 0o777}


@pytest.fixture(scope="module")
def inputs(tmp_path_factory) -> tuple[Path, Path]:
    root = tmp_path_factory.mktemp("inputs")
    make_metrics().to_csv(root / "metrics.csv", index=False)
    for stem, make in DATA.items():
        (root / f"{stem}.json").write_text(json.dumps(make()))
    return root / "metrics.csv", root


@pytest.mark.parametrize("name", list(F.FIGURES))
def test_render_dispatch(tmp_path, inputs, name):
    fn, source = F.FIGURES[name]
    assert fn is getattr(F, f"figure_{name}") and source in ("metrics", *DATA)
    out = tmp_path / "fig" / name
    _check(F.render(name, *inputs, out), out)


def test_render_missing_inputs(tmp_path):
    with pytest.raises(FileNotFoundError, match="nope.csv"):
        F.render("pareto", tmp_path / "nope.csv", None, tmp_path / "x")
    with pytest.raises(FileNotFoundError, match="latents.json"):
        F.render("firing_vs_activation", None, tmp_path, tmp_path / "x")
    with pytest.raises(ValueError, match="unknown figure"):
        F.render("nope", None, tmp_path, tmp_path / "x")
    assert not list(tmp_path.iterdir())


def test_error_bars_are_seed_ranges_or_one_seed_bootstrap_intervals():
    """Several seeds: min–max bars; one seed: the run's bootstrap interval where recorded; nothing known: no bar."""
    import numpy as np
    import pandas as pd

    from repro.report.figures import _errors

    seeds = pd.DataFrame({"mean": [1.0], "min": [0.8], "max": [1.5], "n": [3]})
    assert np.allclose(_errors(seeds), [[0.2], [0.5]])
    one = pd.DataFrame(
        {
            "mean": [1.0, 2.0],
            "min": [1.0, 2.0],
            "max": [1.0, 2.0],
            "n": [1, 1],
            "ci_lo": [0.9, np.nan],
            "ci_hi": [1.2, np.nan],
        }
    )
    assert np.allclose(_errors(one), [[0.1, 0.0], [0.2, 0.0]])
    assert _errors(one.drop(columns=["ci_lo", "ci_hi"])) is None
