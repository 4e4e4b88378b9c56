"""Fashion-MNIST from the Debian package ``dataset-fashion-mnist``.

Source: the four original idx ``.gz`` files in ``/usr/share/datasets/fashion-mnist`` (Zalando Research;
licence MIT, see ``/usr/share/doc/dataset-fashion-mnist/copyright``). 28x28 grey images, uint8 0-255,
10 classes (:data:`CLASS_NAMES`).

Split: the official one, train 60,000 (6,000 per class) and t10k 10,000 (1,000 per class); ``seed`` only
chooses the ``limit`` subset. Ids: the position in train followed by t10k (train ids 0..59,999, test
ids 60,000..69,999). No curation.

Every file is checked: gzip integrity, idx magic number (2049 labels, 2051 images), dimensions, payload
size against the header, the expected example counts and the label range; a truncated or corrupt
file raises ValueError instead of returning garbage. The data directory is a parameter
(``directory``/``root``) with the Debian path as default, so a copy elsewhere can be read.
"""

from __future__ import annotations

import functools
import gzip
import os
import struct
import zlib
from pathlib import Path

import numpy as np

from ._base import DatasetUnavailable, LabelledData, check_args, debian_version, limit_positions, readonly

NAME = "fashion-mnist"
PACKAGE = "dataset-fashion-mnist"
INSTALL = f"sudo apt-get install -y {PACKAGE}"
DEFAULT_DIR = Path("/usr/share/datasets/fashion-mnist")
FILES = {
    "train": ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz"),
    "test": ("t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz"),
}
EXPECTED_COUNTS = {"train": 60_000, "test": 10_000}
CLASS_NAMES = ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot"]
MAGIC_LABELS = 0x00000801
MAGIC_IMAGES = 0x00000803
LOADER_VERSION = 1


def read_idx(path: str | os.PathLike, magic: int) -> np.ndarray:
    """Read one gzip-compressed idx file of unsigned bytes; check the magic number and that the payload
    has exactly the size the header announces. Returns a read-only uint8 array shaped by the header.
    Raises ValueError on a truncated or corrupt file."""
    path = Path(path)
    try:
        with gzip.open(path, "rb") as f:
            raw = f.read()
    except (EOFError, OSError, zlib.error) as exc:
        raise ValueError(f"{path}: corrupt or truncated gzip file ({exc})") from exc
    if len(raw) < 4:
        raise ValueError(f"{path}: truncated idx file ({len(raw)} bytes, no header)")
    found = struct.unpack(">I", raw[:4])[0]
    if found != magic:
        raise ValueError(f"{path}: bad idx magic number 0x{found:08x}, expected 0x{magic:08x}")
    ndim = magic & 0xFF
    header = 4 + 4 * ndim
    if len(raw) < header:
        raise ValueError(f"{path}: truncated idx header")
    dims = struct.unpack(f">{ndim}I", raw[4:header])
    expected = int(np.prod(dims))
    if len(raw) - header != expected:
        raise ValueError(
            f"{path}: idx payload is {len(raw) - header} bytes but the header {dims} announces "
            f"{expected} (truncated or corrupt file)"
        )
    return np.frombuffer(raw, np.uint8, offset=header).reshape(dims)


def _paths(directory: Path, split: str) -> tuple[Path, Path]:
    images, labels = FILES[split]
    return directory / images, directory / labels


def _check_present(directory: Path) -> None:
    missing = [str(p) for split in FILES for p in _paths(directory, split) if not p.is_file()]
    if missing:
        raise DatasetUnavailable(f"{NAME}: missing {', '.join(missing)}; install it with: {INSTALL}")


@functools.lru_cache(maxsize=4)
def _read_split(directory: str, split: str, stamp: tuple) -> tuple[np.ndarray, np.ndarray]:
    images_path, labels_path = _paths(Path(directory), split)
    images = read_idx(images_path, MAGIC_IMAGES)
    labels = read_idx(labels_path, MAGIC_LABELS)
    want = EXPECTED_COUNTS[split]
    if images.shape != (want, 28, 28):
        raise ValueError(f"{images_path}: images of shape {images.shape}, expected {(want, 28, 28)}")
    if labels.shape != (want,):
        raise ValueError(f"{labels_path}: labels of shape {labels.shape}, expected {(want,)}")
    if labels.max() >= len(CLASS_NAMES):
        raise ValueError(f"{labels_path}: label {labels.max()} out of range 0..{len(CLASS_NAMES) - 1}")
    return images, readonly(labels.astype(np.int64))


def read_split(split: str, directory: str | os.PathLike = DEFAULT_DIR) -> tuple[np.ndarray, np.ndarray]:
    """The full official ``split`` ("train" or "test") from ``directory``: read-only (images uint8
    (N, 28, 28), labels int64 (N,)), cached in-process (keyed by the files' size and mtime)."""
    directory = Path(directory)
    _check_present(directory)
    stamp = tuple((p.stat().st_size, p.stat().st_mtime_ns) for p in _paths(directory, split))
    return _read_split(str(directory.resolve()), split, stamp)


def load(
    split: str = "train", limit: int | None = None, seed: int = 0, directory: str | os.PathLike | None = None
) -> LabelledData:
    """Fashion-MNIST ``split`` (official split; ``limit`` takes a seeded class-balanced subset) read from
    ``directory`` (default: the Debian package's directory). Raises DatasetUnavailable when the files are
    missing, ValueError when they are corrupt."""
    check_args(NAME, split, limit, seed)
    directory = Path(directory) if directory is not None else DEFAULT_DIR
    images, labels = read_split(split, directory)
    pos = limit_positions(labels, np.arange(len(labels), dtype=np.int64), limit, seed, f"{NAME}/{split}")
    offset = 0 if split == "train" else EXPECTED_COUNTS["train"]
    default = directory.resolve() == DEFAULT_DIR.resolve()
    source = {
        "kind": "debian",
        "package": PACKAGE,
        "version": debian_version(PACKAGE) if default else None,
        "path": str(directory.resolve()),
        "files": list(FILES[split]),
    }
    return LabelledData(
        name=NAME,
        split=split,
        modality="image",
        examples=images[pos],
        labels=labels[pos].copy(),
        class_names=list(CLASS_NAMES),
        ids=pos + offset,
        seed=seed,
        limit=limit,
        source=source,
        curation={"loader_version": LOADER_VERSION, "split_rule": "official"},
    )
