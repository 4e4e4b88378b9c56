"""The evaluation record contract (repro.eval_record): one writer (versioned, NaN as null, atomic), one reader
that upgrades a version-1 record with its run's fields from the run record, and refuses a newer version."""

from __future__ import annotations

import json
import math

import pytest

from repro import eval_record, run_record


def test_written_records_read_back_with_their_version(tmp_path):
    record = {
        "eval": "reconstruction",
        "run": str(tmp_path / "run"),
        "labels": {"run": "r"},
        "training": {},
        "train_tokens": 10,
        "results": {"nmse": math.nan},
    }
    path = eval_record.write(tmp_path / "e.json", record)
    back = eval_record.read(path)
    assert back["record_version"] == eval_record.VERSION and back["results"]["nmse"] is None
    assert back["labels"] == {"run": "r"} and back["train_tokens"] == 10


def test_a_version_1_record_gets_its_runs_fields_from_the_run_record(tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    run_record.write(run, {"training": {"converged": True}, "data": {"labels": {"run": "x"}, "train_tokens": 7}})
    old = {"eval": "reconstruction", "run": str(run), "results": {}}
    (tmp_path / "old.json").write_text(json.dumps(old))
    back = eval_record.read(tmp_path / "old.json")
    assert back["labels"] == {"run": "x"} and back["training"] == {"converged": True} and back["train_tokens"] == 7
    (tmp_path / "gone.json").write_text(json.dumps(old | {"run": str(tmp_path / "gone")}))
    gone = eval_record.read(tmp_path / "gone.json")
    assert gone["labels"] == {} and gone["training"] is None  # no training rows for a removed run


def test_a_newer_or_unreadable_record_is_refused(tmp_path):
    (tmp_path / "new.json").write_text(json.dumps({"record_version": eval_record.VERSION + 1}))
    with pytest.raises(ValueError, match="newer"):
        eval_record.read(tmp_path / "new.json")
    (tmp_path / "cut.json").write_text('{"eval": "reconstruc')
    with pytest.raises(ValueError, match="unreadable"):
        eval_record.read(tmp_path / "cut.json")
