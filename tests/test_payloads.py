"""What the evaluation writes for the report (repro.evals.payloads): examples' class names and content, token
strings of a text at cache positions, and the thinned training curve."""

from __future__ import annotations

import math

import numpy as np
import pytest

from repro.data import LabelledData
from repro.evals.payloads import MAX_CURVE_POINTS, content, describe, token_strings, training_curve


def test_content_and_class_names_by_example_id():
    images = np.stack([np.full((2, 2, 3), v, np.uint8) for v in (10, 200)])
    images[1, 0, 0] = (0, 30, 60)  # gray = the channel mean
    data = LabelledData("toy", "test", "image", images, np.array([1, 0]), ["a", "b"], np.array([7, 3]))
    got = describe(data, [3, 7])
    assert [g["class"] for g in got] == ["a", "b"] and got[0]["text"] is None
    assert got[0]["image"] == [[30, 200], [200, 200]] and got[1]["image"] == [[10, 10], [10, 10]]
    assert content("a text", "text") == {"text": "a text", "image": None}


def test_the_training_curve_is_thinned_with_both_ends_and_nan_as_null(tmp_path):
    log = tmp_path / "log.csv"
    rows = ["step,loss,mse,l0,lr"] + [f"{s},{1 / s},{'nan' if s == 1 else 2 / s},{s % 7},0.1" for s in range(1, 251)]
    log.write_text("\n".join(rows) + "\n")
    curve = training_curve(log)
    assert len(curve["step"]) == MAX_CURVE_POINTS and curve["step"][0] == 1 and curve["step"][-1] == 250
    assert curve["mse"][0] is None and curve["loss"][-1] == pytest.approx(1 / 250)
    assert all(isinstance(v, float) and math.isfinite(v) for v in curve["mse"][1:])
    assert training_curve(tmp_path / "missing.csv") is None  # an imported SAE has no log


def test_token_strings_are_the_tokenizers_at_the_cache_positions():
    from repro.backbones import load

    backbone = load("minilm-l6")
    text = "the cat sat"
    ids = backbone.preprocess([text])["input_ids"][0].tolist()
    assert token_strings(backbone, text, [1, 2, 3]) == backbone.tokenizer.convert_ids_to_tokens(ids[1:4])
    assert token_strings(backbone, text, [1, 2, 3]) == ["the", "cat", "sat"]
