"""Extraction throughput: `repro.cache.extract` against the bare backbone forward on the same inputs.

Each repetition runs, in alternating order, (a) the bare loop: preprocess + activations at the hook for
every batch, nothing kept; (b) a complete extraction into a fresh cache folder (token selection, storage
conversion, shard files with checksums and fsync, progress file, metadata). Medians of the timed
repetitions and their ratio (b / a; target <= 1.15) are printed.

    python benchmarks/extract_throughput.py --backbone minilm-l6 --hook layer.3 --dataset fortunes --limit 256
    python benchmarks/extract_throughput.py --backbone effnet-lite0 --hook blocks.5.0 --dataset mnist-5k --limit 256
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time

import torch

from repro.backbones import load as load_backbone
from repro.cache import ActivationCache, extract
from repro.data import load as load_data


def bare(backbone, data, hook: str, batch_size: int) -> int:
    tokens = 0
    for lo in range(0, len(data), batch_size):
        acts, mask = backbone.activations(backbone.preprocess(data.examples[lo : lo + batch_size]), hook)
        tokens += int(mask.sum())
    return tokens


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--backbone", default="minilm-l6")
    p.add_argument("--hook", default="layer.3")
    p.add_argument("--dataset", default="fortunes")
    p.add_argument("--limit", type=int, default=256)
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--dtype", default="float32")
    p.add_argument("--reps", type=int, default=5)
    p.add_argument("--threads", type=int, default=2)
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    backbone = load_backbone(args.backbone)
    data = load_data(args.dataset, split="train", limit=args.limit)
    bare(backbone, data, args.hook, args.batch_size)  # warm-up
    times = {"bare": [], "extract": []}
    tokens = 0
    for rep in range(args.reps):
        order = ["bare", "extract"] if rep % 2 == 0 else ["extract", "bare"]
        for name in order:
            if name == "bare":
                start = time.perf_counter()
                tokens = bare(backbone, data, args.hook, args.batch_size)
                times[name].append(time.perf_counter() - start)
            else:
                with tempfile.TemporaryDirectory() as root:
                    start = time.perf_counter()
                    path = extract(
                        backbone, data, args.hook, root, dtype=args.dtype, batch_size=args.batch_size, progress=False
                    )
                    times[name].append(time.perf_counter() - start)
                    assert ActivationCache.open(path).n_tokens == tokens or tokens == 0  # outside the timing
            print(f"  rep {rep} {name}: {times[name][-1]:.2f} s", flush=True)
    a, b = statistics.median(times["bare"]), statistics.median(times["extract"])
    print(
        f"\n{args.backbone}:{args.hook} on {args.dataset} ({len(data)} examples, {tokens} tokens, "
        f"batch {args.batch_size}, {args.dtype}, {args.threads} threads)"
    )
    print(f"bare forward: {a:.2f} s ({tokens / a:.0f} tokens/s); extraction: {b:.2f} s ({tokens / b:.0f} tokens/s)")
    print(f"extraction / bare = {b / a:.3f} (target <= 1.15)")


if __name__ == "__main__":
    main()
