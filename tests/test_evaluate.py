"""`repro evaluate` and `repro guide` end to end on a real offline backbone (EfficientNet-Lite0 on sklearn's
digits, a few dozen images): every evaluation writes its JSON with provenance, the numbers are sane
(EV in range, the SAE never beats the clean head by much, the zero ablation is at chance), evaluation
splits are content addressed (a second evaluation extracts nothing), the guidance follows the measured
L0, and bad input is reported in one line."""

from __future__ import annotations

import json
import socket

import numpy as np
import pytest

from repro.backbones import load as load_backbone
from repro.cache import ActivationCache, extract
from repro.cli import main
from repro.data import load as load_data
from repro.evaluate import EVALS, EvalSettings, evaluate_run
from repro.guide import bisect_penalty, guide_from_run, k_from_l0
from repro.sae import create
from repro.train import TrainConfig, train


@pytest.fixture(autouse=True)
def no_network(monkeypatch):
    def refuse(*args, **kwargs):
        raise OSError("network access attempted in a test")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)


def train_run(cache_path, out, kind: str = "topk", steps: int = 60, **hparams):
    """A run on the cache, as `repro train` writes it: its record names the cache, the validation tail is the
    training split's last 40 tokens (which guidance reads)."""
    cache = ActivationCache.open(cache_path)
    sae = create(kind, cache.d_model, 256, seed=0, **hparams)
    val_start = cache.validation_start(40)
    record = {
        "cache": str(cache_path),
        "spec_hash": cache.metadata["spec_hash"],
        "spec": cache.spec,
        "batch_size": 64,
        "train_tokens": val_start,
    }
    train(
        sae,
        cache.batches(64, seed=0, stop=val_start),
        TrainConfig(steps=steps, lr=2e-3, warmup_steps=5, progress=False),
        out,
        data=record,
        validation=cache.tokens(val_start),
    )
    return out


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    root = tmp_path_factory.mktemp("eval")
    backbone = load_backbone("effnet-lite0", image_size=64)
    data = load_data("digits", split="train", limit=60, seed=0)
    path = extract(backbone, data, "head", root / "cache", progress=False)
    train_run(path, root / "run", "topk", k=8)
    settings = EvalSettings(test_limit=40, cache_root=str(root / "cache"), ns=(1, 5), top_k=5)
    return root, settings


def test_every_evaluation_writes_json_with_provenance(run):
    root, settings = run
    written = evaluate_run(root / "run", ["all"], settings)
    assert set(written) == set(EVALS) - {"lm_loss"}  # lm_loss applies to causal LMs only
    for name, path in written.items():
        rec = json.loads(path.read_text())
        assert rec["eval"] == name and rec["kind"] == "topk" and rec["seed"] == 0
        assert rec["provenance"]["git_commit"] and rec["provenance"]["packages"]["torch"]
        assert rec["data"]["backbone"]["name"] == "effnet-lite0" and rec["data"]["hook"] == "head"
    res = {n: json.loads(p.read_text())["results"] for n, p in written.items()}
    rec = res["reconstruction"]
    assert rec["n_tokens"] == 40 * 4 and 0 < rec["ev"] <= 1 and rec["l0"] > 0  # 64 px → 2×2 map
    topn = res["topn"]["mean_pct"]
    assert topn["zero"] == pytest.approx(10.0, abs=0.1)  # 4 per class, all predicted as one class
    assert topn["no_sae"] > 50 and set(res["topn"]["protocols"]) == {"official", "heldout"}
    probe = res["probing"]["summary"]
    assert 0.5 <= probe["raw_all"] <= 1 and 0 <= probe["sae_top_1"] <= 1
    interp = res["interpretability"]
    assert interp["firing"]["n_tokens"] == 160 and len(interp["scores"]["per_latent"]["purity"]) == 256
    top = np.load(root / "run" / "eval" / "top_examples.npz")
    assert top["values"].shape == (256, 5) and top["ids"].shape == (256, 5)


def test_a_second_evaluation_extracts_nothing(run, monkeypatch):
    root, settings = run
    evaluate_run(root / "run", ["reconstruction"], settings, out_dir=root / "first")

    def fail(*args, **kwargs):
        raise AssertionError("a backbone forward pass was run")

    backbone = load_backbone("effnet-lite0", image_size=64)
    monkeypatch.setattr(type(backbone), "activations", fail)
    out = evaluate_run(root / "run", ["reconstruction"], settings, out_dir=root / "second")
    a = json.loads((root / "first" / "reconstruction.json").read_text())["results"]
    b = json.loads(out["reconstruction"].read_text())["results"]
    assert a == b


def test_given_split_caches_are_read_checked_and_never_extracted(run, tmp_path, monkeypatch):
    """The workflow's evaluation: the splits' caches extracted beforehand (`repro extract --at-most`, as the
    extract rule runs it) and the head's pooled features (`repro features`) are read, nothing is extracted and
    the backbone is not even loaded for reconstruction; the numbers equal those of a self-extracting evaluation.
    A cache of another split, or no cache for a split that is read, is refused naming the split."""
    import repro.cache
    import repro.evaluate

    root, settings = run
    run_dir, cache_root = root / "run", settings.cache_root
    train_pointer, test_pointer = tmp_path / "train.json", tmp_path / "test.json"
    train_cache = json.loads((run_dir / "train.json").read_text())["data"]["cache"]
    assert (
        main(
            [
                "extract",
                "--backbone",
                "effnet-lite0",
                "--layer",
                "head",
                "--dataset",
                "digits",
                "--split",
                "test",
                "--limit",
                "40",
                "--at-most",
                "--image-size",
                "64",
                "--out",
                cache_root,
                "--pointer",
                str(test_pointer),
                "--quiet",
            ]
        )
        == 0
    )
    (train_pointer).write_text(json.dumps({"cache": train_cache}))
    features = tmp_path / "features.json"
    assert main(["features", "--cache", str(train_pointer), "--out", cache_root, "--pointer", str(features)]) == 0
    assert main(["cache", "verify", json.loads(features.read_text())["features"]]) == 0
    reference = evaluate_run(run_dir, ["reconstruction", "topn"], settings, out_dir=tmp_path / "reference")

    def fail(*args, **kwargs):
        raise AssertionError("an evaluation with given caches extracted or loaded something")

    caches = {"train": train_pointer, "test": test_pointer}
    monkeypatch.setattr(repro.cache, "extract", fail)
    monkeypatch.setattr(repro.evaluate, "backbone_from_spec", fail)
    got = evaluate_run(run_dir, ["reconstruction"], settings, tmp_path / "given", split_caches=caches)
    assert (
        json.loads(got["reconstruction"].read_text())["results"]
        == json.loads(reference["reconstruction"].read_text())["results"]
    )
    monkeypatch.undo()
    monkeypatch.setattr(repro.cache, "extract", fail)
    monkeypatch.setattr("repro.evals.heads.pooled_features", fail)
    monkeypatch.setattr("repro.evals.heads.features_from_activation_cache", fail)
    got = evaluate_run(run_dir, ["topn"], settings, tmp_path / "given", split_caches=caches, head_features=features)
    assert (
        json.loads(got["topn"].read_text())["results"]["mean_pct"]
        == json.loads(reference["topn"].read_text())["results"]["mean_pct"]
    )
    with pytest.raises(repro.cache.CacheError, match="test split's cache .* differs .* in dataset"):
        evaluate_run(run_dir, ["reconstruction"], settings, tmp_path / "bad", split_caches={"test": train_pointer})
    with pytest.raises(repro.cache.CacheError, match="no activation cache was given for the test split"):
        evaluate_run(run_dir, ["reconstruction"], settings, tmp_path / "bad", split_caches={"train": train_pointer})


def test_guide_follows_the_measured_l0_and_reads_relu_lambda_off_trained_runs(run, monkeypatch):
    """k = round(L0) of the source run's held-out tail; the ReLU lambda is interpolated from ReLU runs trained on
    the same cache (guidance itself trains nothing); a probe of another cache or kind is refused."""
    import repro.train

    root, settings = run
    cache = json.loads((root / "run" / "train.json").read_text())["data"]["cache"]
    probes = [train_run(cache, root / f"relu-{lam}", "relu", steps=30, l1_coefficient=lam) for lam in (0.01, 10.0)]
    monkeypatch.setattr(repro.train, "train", lambda *a, **k: pytest.fail("guidance trained something"))
    g = guide_from_run(root / "run", probes)
    assert g["l0"] == 8 and g["topk"]["k"] == g["batchtopk"]["k"] == 8 and "training split" in g["l0_split"]
    l0s = sorted(p["l0"] for p in g["relu"]["probes"])
    assert len(l0s) == 2 and [p["run"] for p in g["relu"]["probes"]] == [str(p) for p in probes]
    if l0s[0] <= 8 <= l0s[1]:  # bracketed: interpolated between the two penalties, at the target
        assert g["relu"]["bracketed"] and g["relu"]["l0"] == 8 and 0.01 <= g["relu"]["l1_coefficient"] <= 10
    else:
        assert not g["relu"]["bracketed"] and g["relu"]["l1_coefficient"] in (0.01, 10.0)
    k_only = guide_from_run(root / "run")
    assert k_only["topk"] == g["topk"] and "relu" not in k_only
    with pytest.raises(ValueError, match="must be a relu run"):
        guide_from_run(root / "run", [root / "run"])


def test_relu_lambda_from_probes_interpolates_in_log_log():
    from repro.guide import relu_from_probes

    probes = [{"penalty": 0.1, "l0": 100.0}, {"penalty": 1.0, "l0": 30.0}, {"penalty": 10.0, "l0": 3.0}]
    got = relu_from_probes(probes, 9.4868)  # sqrt(30 * 3): halfway in log L0 between the 1 and 10 probes
    assert got["bracketed"] and got["matched"] and got["l1_coefficient"] == pytest.approx(10**0.5, rel=1e-3)
    far = relu_from_probes(probes, 1.0)
    assert not far["bracketed"] and far["l1_coefficient"] == 10.0 and not far["matched"]
    with pytest.raises(ValueError, match="at least one"):
        relu_from_probes([], 5.0)


def test_bisection_finds_a_monotone_target():
    penalty, probes = bisect_penalty(lambda p: 100 / (1 + 1000 * p), 10.0, lo=-5.0, hi=1.0, steps=12)
    assert abs(100 / (1 + 1000 * penalty) - 10) < 0.2 and len(probes) == 12
    assert k_from_l0(0.2) == 1 and k_from_l0(31.6) == 32
    with pytest.raises(ValueError):
        k_from_l0(float("nan"))


def test_cli_reports_bad_input_in_one_line(run, tmp_path, capsys):
    root, settings = run
    assert main(["evaluate", "--run", str(root / "run"), "--eval", "nonsense"]) == 2
    assert "unknown evaluation(s) nonsense" in capsys.readouterr().err
    assert main(["evaluate", "--run", str(tmp_path), "--eval", "reconstruction"]) == 2
    assert "not a finished run" in capsys.readouterr().err
    assert (
        main(
            [
                "evaluate",
                "--run",
                str(root / "run"),
                "--eval",
                "lm_loss",
                "--cache-root",
                settings.cache_root,
                "--test-limit",
                "40",
            ]
        )
        == 2
    )
    assert "causal language model" in capsys.readouterr().err
    assert (
        main(
            [
                "guide",
                "--from",
                str(root / "run"),
                "--quiet",
                "--out",
                str(tmp_path / "g.json"),
            ]
        )
        == 0
    )
    assert json.loads((tmp_path / "g.json").read_text())["topk"]["k"] >= 1


def test_aggregate_writes_a_tidy_csv(run, tmp_path):
    import csv

    from repro.report.metrics_csv import COLUMNS

    root, settings = run
    written = evaluate_run(
        root / "run", ["reconstruction", "topn", "probing", "interpretability"], settings, out_dir=tmp_path / "ev"
    )
    assert main(["aggregate", *map(str, written.values()), "--out", str(tmp_path / "m.csv")]) == 0
    rows = list(csv.DictReader(open(tmp_path / "m.csv")))
    assert tuple(rows[0]) == COLUMNS
    by = {(r["eval"], r["metric"]): r for r in rows}
    assert by[("reconstruction", "l0")]["value"] == "8.0" and by[("reconstruction", "l0_p95")]["value"] == "8.0"
    assert by[("topn", "official/on_1")]["kind"] == "topk" and by[("topn", "zero")]["d_sae"] == "256"
    assert by[("topn", "zero")]["expansion"] == "0.2" and by[("probing", "raw_all")]["backbone"] == "effnet-lite0"
    assert {r["eval"] for r in rows} == {"reconstruction", "topn", "probing", "interpretability", "train"}
    assert by[("train", "tokens_seen")]["value"] == str(60.0 * 64)
    assert by[("train", "converged")]["value"] in ("0.0", "1.0")
    assert float(by[("reconstruction", "nmse_ci_lo")]["value"]) <= float(by[("reconstruction", "nmse")]["value"])
    assert float(by[("reconstruction", "nmse")]["value"]) <= float(by[("reconstruction", "nmse_ci_hi")]["value"])
    assert by[("topn", "gate_usable")]["value"] in ("0.0", "1.0") and ("topn", "heldout/random_1") in by


def test_concepts_and_example_l0_are_recorded(run, tmp_path):
    root, settings = run
    written = evaluate_run(root / "run", ["reconstruction", "interpretability"], settings, out_dir=tmp_path)
    rec = json.loads(written["reconstruction"].read_text())["results"]["example_l0"]
    assert len(rec["fewest"]) == len(rec["most"]) == 5 and all(e["l0"] == 8 for e in rec["fewest"])  # TopK: L0 = k
    concepts = json.loads(written["interpretability"].read_text())["results"]["concepts"]
    assert 1 <= len(concepts) <= 8
    purities = [c["purity"] for c in concepts]
    assert purities == sorted(purities, reverse=True)
    first = concepts[0]["examples"][0]
    assert len(first["positions"]) == len(first["token_acts"]) == 4  # 2 x 2 spatial tokens at 64 px
    assert max(first["token_acts"]) == pytest.approx(first["value"], rel=1e-5)


def test_figure_data_gathers_images_token_maps_and_curves(run, tmp_path, monkeypatch):
    """From evaluation records only: no dataset, backbone, run record or training log is opened."""
    import repro.backbones
    import repro.data
    import repro.run_record
    from repro.report.figure_data import collect

    root, settings = run
    index = tmp_path / "index.json"
    written = evaluate_run(root / "run", ["reconstruction", "interpretability"], settings, out_dir=tmp_path)
    index.write_text(json.dumps({k: str(v) for k, v in written.items()}))

    def fail(*args, **kwargs):
        raise AssertionError("the figure data opened something other than evaluation records")

    for module, name in ((repro.data, "load"), (repro.backbones, "load"), (repro.run_record, "read")):
        monkeypatch.setattr(module, name, fail)
    monkeypatch.setattr("builtins.open", fail)  # the training log is not read either (pathlib does not use open)
    files = collect([index], tmp_path / "fd")
    monkeypatch.undo()
    data = {k: json.loads(v.read_text())["runs"] for k, v in files.items()}
    ((run_id, l0),) = data["l0_distribution"].items()
    assert l0["kind"] == "topk" and l0["hist"][8] == 160 and len(l0["fewest"]) == 5
    assert np.asarray(l0["fewest"][0]["image"]).shape == (8, 8)  # sklearn digits are 8 x 8
    concept = data["concepts"][run_id]["latents"][0]["examples"][0]
    assert np.asarray(concept["token_map"]).shape == (2, 2) and concept["label"] in [str(d) for d in range(10)]
    curve = data["training_curves"][run_id]
    assert curve["step"][-1] == 60 and len(curve["loss"]) == 60
    lat = data["latents"][run_id]
    assert len(lat["firing_rate"]) == len(lat["entropy"]) > 0 and all(r > 0 for r in lat["firing_rate"])


def toy_decoder_spread(run_data):
    """A toy evaluation (its own function plus one catalogue entry): the mean L0 of the test split's codes and
    the spread of the decoder's row norms."""
    enc = run_data.encoded("test")
    norms = run_data.sae.decoder_directions().norm(dim=1)
    return {"test_l0": float(enc.reconstruction["l0"]), "norm_spread": float(norms.max() - norms.min())}, ("test",)


def test_a_new_evaluation_is_its_function_plus_one_catalogue_entry(run, tmp_path):
    """Declared here and nowhere else, the toy evaluation runs through ``repro evaluate`` and ``repro aggregate``
    and is accepted by the workflow's config check."""
    import csv

    import yaml

    from repro.evals import registry
    from repro.workflow import check_config

    root, settings = run
    registry.declare(registry.Evaluation("toy_spread", toy_decoder_spread, registry.scalars))
    try:
        assert (
            main(
                [
                    "evaluate",
                    "--run",
                    str(root / "run"),
                    "--eval",
                    "toy_spread",
                    "--eval",
                    "reconstruction",
                    "--test-limit",
                    "40",
                    "--cache-root",
                    settings.cache_root,
                    "--out",
                    str(tmp_path / "ev"),
                    "--quiet",
                ]
            )
            == 0
        )
        record = json.loads((tmp_path / "ev" / "toy_spread.json").read_text())
        assert record["results"]["test_l0"] == 8.0 and record["data"]["splits"]["test"]["cache"]
        assert main(["aggregate", str(tmp_path / "ev" / "toy_spread.json"), "--out", str(tmp_path / "m.csv")]) == 0
        rows = {r["metric"]: r for r in csv.DictReader(open(tmp_path / "m.csv")) if r["eval"] == "toy_spread"}
        assert set(rows) == {"test_l0", "norm_spread"} and rows["test_l0"]["value"] == "8.0"
        config = yaml.safe_load(open("config/tiny.yaml"))
        config["experiments"]["ablation"]["evals"].append("toy_spread")
        check_config(config)
    finally:
        registry.EVALUATIONS.pop("toy_spread", None)
    with pytest.raises(ValueError, match="unknown evaluation 'toy_spread'"):
        check_config(config)
