"""Shared test set-up.

- SIGTERM (a CI time limit, ``timeout``, ``kill``) ends the test run the way Ctrl-C does, so that every
  fixture's teardown runs: tests that start processes or services (the local SLURM cluster, Snakemake)
  stop them on that exit path too.
- Small real activation caches, extracted once per session from the offline assets: MiniLM-L6 layer 3 on
  WordNet glosses (384-d, about 45k tokens) and SmolLM2-135M's last residual stream on fortunes (576-d,
  about 13k tokens, attention sinks filtered). Tests that need them are skipped, with the reason, when an
  asset is not installed (``bash scripts/setup.sh --test`` installs them all).
"""

from __future__ import annotations

import signal
from pathlib import Path

import pytest


def _sigterm_as_interrupt(signum, frame):
    raise KeyboardInterrupt(f"signal {signum} (SIGTERM)")


def pytest_configure(config):
    signal.signal(signal.SIGTERM, _sigterm_as_interrupt)


def _extract(root: Path, backbone: str, hook: str, dataset: str, limit: int, max_norm_ratio: float | None = None):
    from repro.backbones import BackboneUnavailable
    from repro.backbones import load as load_backbone
    from repro.backbones.token_filter import TokenFilter
    from repro.cache import ActivationCache, extract
    from repro.data import DatasetUnavailable
    from repro.data import load as load_data

    try:
        bb = load_backbone(backbone)
        data = load_data(dataset, split="train", limit=limit, seed=0)
    except (BackboneUnavailable, DatasetUnavailable) as e:
        pytest.skip(f"offline asset missing: {e}")
    bb.token_filter = TokenFilter(max_norm_ratio=max_norm_ratio)
    return ActivationCache.open(extract(bb, data, hook, root, progress=False))


@pytest.fixture(scope="session")
def real_cache_root(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("real-caches")


@pytest.fixture(scope="session")
def minilm_cache(real_cache_root):
    """MiniLM-L6 ``layer.3`` on 4,000 WordNet glosses (training split): RMS token norm about 12."""
    return _extract(real_cache_root, "minilm-l6", "layer.3", "wordnet-glosses", 4000)


@pytest.fixture(scope="session")
def smollm2_cache(real_cache_root):
    """SmolLM2-135M ``resid.29`` on 300 fortunes (training split, about 13k tokens), sinks above 3x the median
    norm dropped: RMS token norm about 890, 70x MiniLM's."""
    pytest.importorskip("gguf")
    return _extract(real_cache_root, "smollm2-135m", "resid.29", "fortunes", 300, max_norm_ratio=3.0)


def _assert_same_code(ours, theirs, rtol: float = 1e-5) -> None:
    """Two libraries' codes of the same inputs agree: within ``rtol`` x the largest |value|, and with the same
    support except where a pre-activation sits within rounding of ReLU's zero (both values below that bound
    there; a flip at a JumpReLU or TopK boundary would differ by far more and fail the value check)."""
    import torch

    bound = rtol * float(theirs.abs().max())
    differ = (ours != 0) != (theirs != 0)
    flipped = torch.maximum(ours.abs(), theirs.abs())[differ]
    assert flipped.numel() == 0 or float(flipped.max()) <= bound, f"supports differ by up to {float(flipped.max())}"
    assert float((ours - theirs).abs().max()) <= bound


@pytest.fixture
def same_code():
    """:func:`_assert_same_code`."""
    return _assert_same_code
