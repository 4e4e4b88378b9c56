"""Paper-scale data through Hugging Face ``datasets``, read from LOCAL disk only.

Three ways in, none of which ever names a hub id (so nothing is downloaded, whatever
``HF_DATASETS_OFFLINE`` says):

- ``hf-imagefolder:<path>``: the packaged "imagefolder" builder on a local directory laid out as
  ``<path>/<class>/<image>`` (one split, "train") or ``<path>/{train,test,...}/<class>/<image>``
  (official splits). ``cache_dir`` is where ``datasets`` writes its Arrow cache (default: its own,
  usually ``~/.cache/huggingface/datasets``).
- ``hf-disk:<path>``: ``datasets.load_from_disk`` of a directory written by ``save_to_disk`` (a
  ``Dataset`` or a ``DatasetDict``).
- Named entries (:data:`PAPER_DATASETS`: imagenet, food101, dtd, eurosat, flowers102, oxford-pets,
  stanford-cars, sun397, ucf101, fgvc-aircraft, caltech101, openwebtext, wikitext-103): the directory
  ``<root>/<name>``, read as ``hf-disk`` when it holds a ``save_to_disk`` output, else (image sets only)
  as ``hf-imagefolder``. Without ``root`` or without that directory, DatasetUnavailable explains how to
  pre-cache it on a machine with network.

Licences are those of each dataset (ImageNet's terms of access, Food-101, ...); nothing is shipped here.

Columns: the image column is the first of ``image``/``img`` with an ``Image`` feature; otherwise the
text column is ``text``. Labels come from the first of ``label``/``labels``/``fine_label``; a
``ClassLabel`` gives ``class_names``, a plain integer column gives ``"0".."max"``. Without a label column
(openwebtext, wikitext-103) all labels are 0 and ``class_names`` is ``["text"]`` (``["image"]`` for an
unlabelled image set).

Examples are lazy: ``examples`` is an :class:`HFExamples` sequence whose items are decoded on access
(PIL images for image sets, str for text sets); nothing is read into memory up front apart from the
label column.

Split: when the data has exactly one split (a plain ``Dataset``, an ImageFolder without split
folders, whatever that split is called), "train" and "test" are derived from it by the seeded stratified
80/20 rule of :mod:`repro.data._base` (for unlabelled data: a seeded random 80/20). Otherwise a split
that exists in the data is used as is ("official"; any split name present is accepted, e.g.
"validation").
Ids: the row index within the concatenation of the data's splits in the order train, validation, test,
then any others sorted by name. ``spec()`` records the resolved path, the ``datasets`` version and the
Arrow fingerprint of the data.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from ._base import DatasetUnavailable, LabelledData, check_args, limit_positions, pypi_version, stratified_split

PAPER_IMAGE = (
    "imagenet",
    "food101",
    "dtd",
    "eurosat",
    "flowers102",
    "oxford-pets",
    "stanford-cars",
    "sun397",
    "ucf101",
    "fgvc-aircraft",
    "caltech101",
)
PAPER_TEXT = ("openwebtext", "wikitext-103")
PAPER_DATASETS = PAPER_IMAGE + PAPER_TEXT
PREFIXES = ("hf-imagefolder:", "hf-disk:")
IMAGE_COLUMNS = ("image", "img")
TEXT_COLUMNS = ("text",)
LABEL_COLUMNS = ("label", "labels", "fine_label")
SPLIT_ORDER = ("train", "validation", "test")
INSTALL = "pip install datasets"
LOADER_VERSION = 1


class HFExamples(Sequence):
    """A lazy, read-only sequence over one column of a ``datasets.Dataset`` at given rows; items are
    decoded on access (PIL images or str). Slicing returns another HFExamples."""

    def __init__(self, dataset, column: str, rows: np.ndarray):
        self._dataset = dataset
        self._column = column
        self._rows = np.asarray(rows, np.int64)

    def __len__(self) -> int:
        return len(self._rows)

    def __getitem__(self, index):
        if isinstance(index, slice):
            return HFExamples(self._dataset, self._column, self._rows[index])
        return self._dataset[int(self._rows[index])][self._column]

    def __repr__(self) -> str:
        return f"HFExamples(column={self._column!r}, n={len(self)})"


def _datasets():
    try:
        import datasets
    except ImportError as exc:
        raise DatasetUnavailable(f"Hugging Face datasets is not installed; install it with: {INSTALL}") from exc
    return datasets


def _is_saved(path: Path) -> bool:
    return (path / "dataset_dict.json").is_file() or (path / "state.json").is_file()


def _open(kind: str, path: Path, cache_dir: str | os.PathLike | None) -> dict:
    """Open a local source as {split name: Dataset}."""
    datasets = _datasets()
    if kind == "hf-disk":
        obj = datasets.load_from_disk(str(path))
    else:
        obj = datasets.load_dataset(
            "imagefolder", data_dir=str(path), cache_dir=None if cache_dir is None else str(cache_dir)
        )
    if isinstance(obj, datasets.Dataset):
        return {"train": obj}
    return dict(obj)


def _columns(ds, what: str) -> tuple[str, str, str | None]:
    """(modality, example column, label column or None)."""
    import datasets

    features = ds.features
    image = next((c for c in IMAGE_COLUMNS if c in features and isinstance(features[c], datasets.Image)), None)
    if image is not None:
        modality, column = "image", image
    elif any(c in features for c in TEXT_COLUMNS):
        modality, column = "text", next(c for c in TEXT_COLUMNS if c in features)
    else:
        raise ValueError(
            f"{what}: no image column {IMAGE_COLUMNS} and no text column {TEXT_COLUMNS} in {list(features)}"
        )
    label = next((c for c in LABEL_COLUMNS if c in features), None)
    return modality, column, label


def _split_order(names) -> list[str]:
    return [s for s in SPLIT_ORDER if s in names] + sorted(s for s in names if s not in SPLIT_ORDER)


def load_local(
    kind: str,
    path: str | os.PathLike,
    split: str = "train",
    limit: int | None = None,
    seed: int = 0,
    name: str | None = None,
    cache_dir: str | os.PathLike | None = None,
) -> LabelledData:
    """Load ``split`` of a local Hugging Face source; ``kind`` is "hf-imagefolder" or "hf-disk" (see the
    module docstring). Raises DatasetUnavailable when ``path`` is not a directory."""
    if kind not in ("hf-imagefolder", "hf-disk"):
        raise ValueError(f"unknown Hugging Face source kind {kind!r}")
    path = Path(path).expanduser()
    name = name or f"{kind}:{path}"
    if not path.is_dir():
        raise DatasetUnavailable(f"{name}: {path} is not a directory")
    if kind == "hf-disk" and not _is_saved(path):
        raise DatasetUnavailable(
            f"{name}: {path} holds no datasets save_to_disk output (no dataset_dict.json or state.json)"
        )
    parts = _open(kind, path, cache_dir)
    order = _split_order(parts)
    if len(parts) == 1 and split in ("train", "test"):
        check_args(name, split, limit, seed)
        rule = "stratified-80-20"
    elif split in parts:
        check_args(name, split, limit, seed, splits=order)
        rule = "official"
    else:
        raise ValueError(
            f"{name}: split {split!r} not found; available: {order}"
            + (" (train/test are derived only from a single-split source)" if len(parts) > 1 else "")
        )
    ds = parts[split] if rule == "official" else parts[order[0]]
    modality, column, label_column = _columns(ds, name)
    if label_column is None:
        labels = np.zeros(len(ds), np.int64)
        class_names = [modality]
    else:
        labels = np.asarray(ds.with_format("numpy")[label_column]).astype(np.int64)
        feature = ds.features[label_column]
        names = getattr(feature, "names", None)
        class_names = list(names) if names else [str(i) for i in range(int(labels.max()) + 1 if len(labels) else 0)]
        if len(labels) and (labels.min() < 0 or labels.max() >= len(class_names)):
            raise ValueError(f"{name}: labels outside 0..{len(class_names) - 1} in column {label_column!r}")
    if rule == "official":
        rows = np.arange(len(ds), dtype=np.int64)
        offset = sum(len(parts[s]) for s in order[: order.index(split)])
    else:
        train, test = stratified_split(labels, seed)
        rows = train if split == "train" else test
        offset = 0
    rows = limit_positions(labels, rows, limit, seed, f"{name}/{split}")
    source = {
        "kind": kind,
        "path": str(path.resolve()),
        "datasets": pypi_version("datasets"),
        "fingerprint": getattr(ds, "_fingerprint", None),
        "splits": order,
    }
    return LabelledData(
        name=name,
        split=split,
        modality=modality,
        examples=HFExamples(ds, column, rows),
        labels=labels[rows],
        class_names=class_names,
        ids=rows + offset,
        seed=seed,
        limit=limit,
        source=source,
        curation={
            "loader_version": LOADER_VERSION,
            "split_rule": rule,
            "example_column": column,
            "label_column": label_column,
        },
    )


def load_named(
    name: str,
    split: str = "train",
    limit: int | None = None,
    seed: int = 0,
    root: str | os.PathLike | None = None,
    cache_dir: str | os.PathLike | None = None,
) -> LabelledData:
    """Load a named paper-scale dataset from ``<root>/<name>`` (see the module docstring); raise
    DatasetUnavailable with pre-caching instructions when ``root`` is None or the directory is missing."""
    if name not in PAPER_DATASETS:
        raise ValueError(f"unknown paper-scale dataset {name!r}; known: {list(PAPER_DATASETS)}")
    how = (
        f"pre-cache it on a machine with network, e.g. `datasets.load_dataset(<hub id of {name}>)"
        f".save_to_disk(ROOT/{name})`"
    )
    if name in PAPER_IMAGE:
        how += f", or lay out images as ROOT/{name}/[train|test/]<class>/<image>"
    how += f", copy ROOT here and pass root=ROOT (load({name!r}, root=...))"
    if root is None:
        raise DatasetUnavailable(f"{name}: no local data root given; {how}")
    path = Path(root).expanduser() / name
    if not path.is_dir():
        raise DatasetUnavailable(f"{name}: {path} does not exist; {how}")
    if _is_saved(path):
        kind = "hf-disk"
    elif name in PAPER_IMAGE:
        kind = "hf-imagefolder"
    else:
        raise DatasetUnavailable(f"{name}: {path} holds no save_to_disk output; {how}")
    return load_local(kind, path, split=split, limit=limit, seed=seed, name=name, cache_dir=cache_dir)
