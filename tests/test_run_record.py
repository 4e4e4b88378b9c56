"""The run record (repro/run_record.py): written with its version, read back; a missing, unreadable or newer
record is reported naming the run, never half-read."""

from __future__ import annotations

import json

import pytest

from repro import run_record


def test_the_record_round_trips_with_its_version(tmp_path):
    run_record.write(tmp_path, {"kind": "topk", "data": {"labels": {"setting": "k=8"}}})
    record = run_record.read(tmp_path)
    assert record["record_version"] == run_record.VERSION and record["kind"] == "topk"
    assert run_record.labels(tmp_path) == {"setting": "k=8"} and run_record.labels(tmp_path / "none") == {}
    assert not [p for p in tmp_path.iterdir() if p.name != run_record.FILE]  # atomic: no temporary left


def test_a_missing_unreadable_or_newer_record_is_refused(tmp_path):
    with pytest.raises(FileNotFoundError, match="is not a finished run"):
        run_record.read(tmp_path)
    (tmp_path / run_record.FILE).write_text('{"kind": "topk"')  # truncated
    with pytest.raises(ValueError, match="unreadable"):
        run_record.read(tmp_path)
    (tmp_path / run_record.FILE).write_text("[1, 2]")
    with pytest.raises(ValueError, match="expected a JSON object"):
        run_record.read(tmp_path)
    (tmp_path / run_record.FILE).write_text(json.dumps({"record_version": run_record.VERSION + 1}))
    with pytest.raises(ValueError, match="newer"):
        run_record.read(tmp_path)
    (tmp_path / run_record.FILE).write_text(json.dumps({"kind": "relu"}))  # before versions: version 1
    assert run_record.read(tmp_path)["kind"] == "relu"
