"""Top-n head features: the pooled features of the training split from the full forward pass against the
same features computed from the split's activation cache through the blocks after the hook only
(`repro.evals.heads.features_from_activation_cache`), as the cosine head of the top-n evaluation needs
them. The cache is extracted once beforehand (in the DAG it already exists: the SAE trained on it).

Prints, per repetition and as medians, the seconds of each path, their ratio (full / cached) and the
largest absolute difference of the features.

    python benchmarks/head_features.py --backbone effnet-lite0 --image-size 224 --hook blocks.5.3 \
        --dataset fashion-mnist --limit 512
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time

import torch

from repro.backbones import load as load_backbone
from repro.cache import extract
from repro.data import load as load_data
from repro.evals.heads import features_from_activation_cache, pooled_features


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--backbone", default="effnet-lite0")
    p.add_argument("--image-size", type=int, default=224)
    p.add_argument("--hook", default="blocks.5.3")
    p.add_argument("--dataset", default="fashion-mnist")
    p.add_argument("--limit", type=int, default=512)
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--repeats", type=int, default=3)
    args = p.parse_args()
    torch.set_grad_enabled(False)
    backbone = load_backbone(args.backbone, image_size=args.image_size)
    data = load_data(args.dataset, split="train", limit=args.limit, seed=0)
    with tempfile.TemporaryDirectory() as root:
        path = extract(backbone, data, args.hook, root, progress=False)
        full_s, cached_s, diff = [], [], 0.0
        for r in range(args.repeats):
            t0 = time.perf_counter()
            full = pooled_features(backbone, data.examples, args.batch_size)
            t1 = time.perf_counter()
            cached = features_from_activation_cache(backbone, data, path, args.hook)
            t2 = time.perf_counter()
            if cached is None:
                raise SystemExit(f"{args.backbone} at {args.hook}: no cached path (features_from_cached is None)")
            full_s.append(t1 - t0)
            cached_s.append(t2 - t1)
            diff = max(diff, float((full - cached).abs().max()))
            print(
                f"repeat {r}: full forward {t1 - t0:.2f} s, from the cache {t2 - t1:.2f} s, "
                f"ratio {(t1 - t0) / (t2 - t1):.1f}x"
            )
    full_m, cached_m = statistics.median(full_s), statistics.median(cached_s)
    print(
        f"{args.backbone} @{args.image_size}px, hook {args.hook}, {len(data)} {args.dataset} images, "
        f"{torch.get_num_threads()} threads"
    )
    print(
        f"median: full forward {full_m:.2f} s ({len(data) / full_m:.0f} img/s), from the cache {cached_m:.2f} s "
        f"({len(data) / cached_m:.0f} img/s), ratio {full_m / cached_m:.1f}x; max |difference| {diff:.2e}"
    )


if __name__ == "__main__":
    main()
