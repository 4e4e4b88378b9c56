"""The pooled head features in the cache protocol (repro.head_features): content addressed, written atomically,
verified on every read; a damaged, truncated, renamed or foreign folder is refused with its problem named, and
`repro cache verify` checks a features folder as it checks an activation cache."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from repro import head_features
from repro.cache import CacheError, spec_hash
from repro.cli import main

SPEC = {"what": head_features.WHAT, "backbone": {"name": "toy"}, "dataset": {"name": "toy", "split": "train"}}
OTHER = SPEC | {"dataset": {"name": "toy", "split": "test"}}


def write(root, spec=SPEC, values=None):
    values = torch.arange(12, dtype=torch.float32).reshape(4, 3) if values is None else values
    return head_features.write(root, spec, lambda: (values, "a test"))


def test_written_once_then_reused_and_read_back(tmp_path):
    folder = write(tmp_path)
    assert folder == tmp_path / "features" / spec_hash(SPEC) and head_features.verify(folder) == []
    meta = json.loads((folder / "metadata.json").read_text())
    assert meta["shape"] == [4, 3] and meta["computed_from"] == "a test" and meta["provenance"]["git_commit"]
    assert head_features.write(tmp_path, SPEC, lambda: pytest.fail("recomputed")) == folder
    assert torch.equal(head_features.read(folder, SPEC), torch.arange(12, dtype=torch.float32).reshape(4, 3))
    assert head_features.is_features_folder(folder) and not head_features.is_features_folder(tmp_path)


def test_an_interrupted_write_leaves_nothing_under_the_final_name(tmp_path):
    def interrupted():
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        head_features.write(tmp_path, SPEC, interrupted)
    assert not (tmp_path / "features" / spec_hash(SPEC)).exists()
    assert head_features.verify(write(tmp_path)) == []


@pytest.mark.parametrize(
    "damage, problem",
    [
        (lambda f: (f / "features.npy").write_bytes((f / "features.npy").read_bytes()[:-4]), "unreadable|shape"),
        (lambda f: (f / "features.npy").unlink(), "missing features.npy"),
        (lambda f: (f / "metadata.json").write_text("{"), "unreadable"),
        (lambda f: np.save(f / "features.npy", np.ones((4, 3), np.float32)), "checksum mismatch"),
        (lambda f: f.rename(f.with_name("0" * 64)), "spec hash mismatch"),
    ],
)
def test_a_damaged_folder_is_refused_naming_the_problem(tmp_path, capsys, damage, problem):
    folder = write(tmp_path)
    damage(folder)
    folder = folder if folder.exists() else folder.with_name("0" * 64)
    with pytest.raises(CacheError, match=problem):
        head_features.read(folder)
    if (folder / "metadata.json").read_text() != "{":  # a folder without readable metadata is no features folder
        assert main(["cache", "verify", str(folder)]) == 1
        assert "PROBLEM" in capsys.readouterr().out


def test_features_of_another_spec_are_refused_and_a_pointer_is_followed(tmp_path):
    from repro.files import write_pointer

    folder = write(tmp_path)
    write_pointer(tmp_path / "p.json", "features", folder)
    assert head_features.read(tmp_path / "p.json", SPEC).shape == (4, 3)
    with pytest.raises(CacheError, match="not the features asked for"):
        head_features.read(tmp_path / "p.json", OTHER)
    (tmp_path / "q.json").write_text(json.dumps({"cache": str(folder)}))
    with pytest.raises(CacheError, match="not a pointer to a features folder"):
        head_features.read(tmp_path / "q.json")
