"""The tidy metrics CSV contract (repro/report/metrics_csv.py): what the writer writes the reader reads back, to the
last digit, normalised; a missing file is both a FileNotFoundError and a ValueError; missing columns are named."""

from __future__ import annotations

import math

import pandas as pd
import pytest

from repro.report import metrics_csv


def test_a_written_csv_reads_back_to_the_last_digit_and_normalised(tmp_path):
    row = dict(
        zip(
            metrics_csv.COLUMNS,
            [
                "default",
                "vision/topk/k=8/x2/s0",
                "EffNet-Lite0",
                "Fashion-MNIST",
                "blocks.5.3",
                "topk",
                384,
                2,
                0,
                "k=8",
                "reconstruction",
                "nmse",
                0.1 + 0.2,
            ],
            strict=True,
        )
    )
    rows = [row, row | {"metric": "ev", "value": math.nan, "setting": "", "seed": None, "expansion": 1 / 3}]
    assert metrics_csv.write(rows, tmp_path / "m.csv") == 2
    df = metrics_csv.read(tmp_path / "m.csv")
    assert tuple(df.columns) == metrics_csv.COLUMNS
    assert df["value"].iloc[0] == 0.1 + 0.2  # repr: every digit (0.30000000000000004)
    assert math.isnan(df["value"].iloc[1]) and math.isnan(df["seed"].iloc[1])
    assert df["setting"].tolist() == ["k=8", "default"] and df["expansion"].tolist() == [2.0, 0.3333]
    assert df["backbone"].iloc[0] == "effnet-lite0" and df["dataset"].iloc[0] == "fashion-mnist"


def test_a_missing_file_or_column_is_reported_naming_it(tmp_path):
    with pytest.raises(FileNotFoundError, match="nope.csv"):
        metrics_csv.read(tmp_path / "nope.csv")
    with pytest.raises(ValueError, match="nope.csv"):
        metrics_csv.read(tmp_path / "nope.csv")
    pd.DataFrame({"run": ["r"], "value": [1.0]}).to_csv(tmp_path / "partial.csv", index=False)
    with pytest.raises(ValueError, match=r"partial\.csv: missing column\(s\) config, backbone"):
        metrics_csv.read(tmp_path / "partial.csv")
