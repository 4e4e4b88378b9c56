"""The identity and sharing of loaded weights: sha256 digests of weight files (computed once per process)
and of in-memory state, library versions for a backbone's ``spec``, the per-process store of loaded models
that backbones differing only in preprocessing share (:func:`shared`, :func:`clear_shared`), and
:func:`frozen`."""

from __future__ import annotations

import hashlib
import importlib.metadata
import os
import threading
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn

_DIGESTS: dict[tuple[str, int, int], str] = {}
_DIGEST_LOCK = threading.Lock()


def file_digest(path: str | os.PathLike) -> str:
    """sha256 of a file's bytes, computed once per process (keyed by path, size and mtime)."""
    p = Path(path).resolve()
    st = p.stat()
    key = (str(p), st.st_size, st.st_mtime_ns)
    with _DIGEST_LOCK:
        if key not in _DIGESTS:
            h = hashlib.sha256()
            with open(p, "rb") as f:
                for chunk in iter(lambda: f.read(1 << 22), b""):
                    h.update(chunk)
            _DIGESTS[key] = h.hexdigest()
        return _DIGESTS[key]


def files_digest(paths: Sequence[str | os.PathLike]) -> str:
    """The digest of one file, or for several the sha256 of their ``name:digest`` lines (sorted)."""
    paths = sorted(Path(p) for p in paths)
    if len(paths) == 1:
        return file_digest(paths[0])
    lines = "".join(f"{p.name}:{file_digest(p)}\n" for p in paths)
    return hashlib.sha256(lines.encode()).hexdigest()


def state_dict_digest(module: nn.Module) -> str:
    """sha256 over a module's state (names, dtypes, shapes and bytes), for models built in memory."""
    h = hashlib.sha256()
    for name, tensor in sorted(module.state_dict().items()):
        t = tensor.detach().cpu().contiguous().reshape(-1)
        h.update(f"{name}:{t.dtype}:{tuple(tensor.shape)}\n".encode())
        h.update(t.view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return h.hexdigest()


def version(dist: str) -> str | None:
    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return None


def library_versions(*dists: str) -> dict[str, str | None]:
    return {d: version(d) for d in ("torch", *dists)}


_SHARED: dict[tuple, Any] = {}
_SHARED_LOCK = threading.RLock()


def shared(key: tuple, factory: Callable[[], Any]) -> Any:
    """A per-process cache of loaded models, so that backbones differing only in preprocessing
    options (``max_length``, ``image_size``) share one copy of the weights."""
    with _SHARED_LOCK:
        if key not in _SHARED:
            _SHARED[key] = factory()
        return _SHARED[key]


def clear_shared() -> None:
    with _SHARED_LOCK:
        _SHARED.clear()


def frozen(model: nn.Module, device: str | torch.device) -> nn.Module:
    """``model`` in eval mode on ``device`` with gradients off for every parameter."""
    model = model.to(device).eval()
    for p in model.parameters():
        p.requires_grad_(False)
    return model
