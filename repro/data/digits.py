"""scikit-learn's digits (``sklearn.datasets.load_digits``): 1,797 images of 8x8 pixels, 10 classes
(about 180 each), class names "0".."9". Bundled with scikit-learn (BSD-3; a copy of the UCI "Optical
Recognition of Handwritten Digits" test set). Small and always present: meant for unit tests.

Pixels: the source values 0..16 are scaled to uint8 0..255 by ``round(v * 255 / 16)``.
Split: the seeded stratified 80/20 rule of :mod:`repro.data._base`. Ids: the index in ``load_digits()``.
No curation.
"""

from __future__ import annotations

import functools

import numpy as np

from ._base import DatasetUnavailable, LabelledData, check_args, pypi_version, readonly, split_and_limit

NAME = "digits"
DISTRIBUTION = "scikit-learn"
INSTALL = "pip install scikit-learn"
CLASS_NAMES = [str(d) for d in range(10)]
LOADER_VERSION = 1


@functools.lru_cache(maxsize=1)
def read_all() -> tuple[np.ndarray, np.ndarray]:
    """All 1,797 images (read-only uint8 (1797, 8, 8), 0..255) and labels (int64)."""
    try:
        from sklearn.datasets import load_digits
    except ImportError as exc:
        raise DatasetUnavailable(f"{NAME}: scikit-learn is not installed; install it with: {INSTALL}") from exc
    bunch = load_digits()
    raw = np.asarray(bunch.images)
    if raw.shape != (1797, 8, 8) or raw.min() < 0 or raw.max() > 16:
        raise ValueError(f"{NAME}: unexpected digits data (shape {raw.shape}, range {raw.min()}..{raw.max()})")
    images = np.floor(raw * (255.0 / 16.0) + 0.5).astype(np.uint8)
    return readonly(images), readonly(np.asarray(bunch.target).astype(np.int64))


def load(split: str = "train", limit: int | None = None, seed: int = 0) -> LabelledData:
    """Digits ``split`` under the seeded stratified 80/20 rule; ``limit`` takes a seeded class-balanced
    subset."""
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
        curation={"loader_version": LOADER_VERSION, "split_rule": "stratified-80-20", "pixel_scale": "255/16"},
    )
