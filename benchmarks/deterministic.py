"""What PyTorch's deterministic-algorithms switch costs per training step, and which kinds need it.

For every kind, at one size: (1) the median step time with and without
``torch.use_deterministic_algorithms(True, warn_only=True)``, interleaved in one process (each repetition
runs every (kind, flag) pair once, in a rotating order; same batch, same optimiser, ``--threads``
threads); (2) whether two training runs of ``--steps`` steps with the flag off end with bit-identical
weights (same seed, same batches, ``--threads`` threads): a kind whose runs differ needs the flag for
bit-identical resume. Prints a Markdown table.

    python benchmarks/deterministic.py                         # 384 / 3072 / 4096 tokens, 2 threads
    python benchmarks/deterministic.py --d-in 64 --d-sae 512 --tokens 512 --reps 2 --steps 10   # a quick look
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from sae_step import activations  # noqa: E402  (the benchmarks' shared synthetic inputs)

from repro.sae import KINDS, create  # noqa: E402


def hparams(kind: str, k: int) -> dict:
    return {"k": k} if kind in ("topk", "batchtopk") else {}


def step(sae, opt, x) -> None:
    opt.zero_grad(set_to_none=True)
    loss, _ = sae.loss(x)
    loss.backward()
    sae.constrain_grads()
    opt.step()
    sae.constrain_weights()


def timed(sae, opt, x, deterministic: bool) -> float:
    torch.use_deterministic_algorithms(deterministic, warn_only=True)
    try:
        start = time.perf_counter()
        step(sae, opt, x)
        return time.perf_counter() - start
    finally:
        torch.use_deterministic_algorithms(False)


def final_weights(kind: str, args, batches: list[torch.Tensor]) -> dict[str, torch.Tensor]:
    torch.manual_seed(0)
    sae = create(kind, args.d_in, args.d_sae, seed=0, **hparams(kind, args.k))
    sae.fit_to_data(batches[0])
    opt = torch.optim.Adam(sae.parameters(), lr=1e-3)
    for x in batches:
        step(sae, opt, x)
    return {k: v.detach().clone() for k, v in sae.state_dict().items()}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--d-in", type=int, default=384)
    p.add_argument("--d-sae", type=int, default=3072)
    p.add_argument("--tokens", type=int, default=4096)
    p.add_argument("--k", type=int, default=32)
    p.add_argument("--reps", type=int, default=3)
    p.add_argument("--steps", type=int, default=30, help="steps of the two determinism runs per kind")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--only", nargs="*", help="kinds (default: all)")
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    kinds = [k for k in KINDS if not args.only or k in args.only]
    x = activations(args.tokens, args.d_in, 0)
    models = {}
    for kind in kinds:
        for flag in (False, True):
            sae = create(kind, args.d_in, args.d_sae, seed=0, **hparams(kind, args.k))
            sae.fit_to_data(x)
            models[kind, flag] = (sae, torch.optim.Adam(sae.parameters(), lr=1e-5))
    keys = list(models)
    times: dict = {key: [] for key in keys}
    print(
        f"d_in={args.d_in} d_sae={args.d_sae} tokens={args.tokens} threads={args.threads} torch={torch.__version__}",
        flush=True,
    )
    for rep in range(args.reps + 1):
        shift = rep % len(keys)
        for key in keys[shift:] + keys[:shift]:
            t = timed(*models[key], x, key[1])
            if rep:
                times[key].append(t)
        print(f"  rep {rep} done", flush=True)
    batches = [activations(args.tokens, args.d_in, 1 + i) for i in range(args.steps)]
    print("\n| kind | step s, flag off | step s, flag on | on / off | two runs without the flag |")
    print("|---|---|---|---|---|")
    for kind in kinds:
        off, on = statistics.median(times[kind, False]), statistics.median(times[kind, True])
        a, b = final_weights(kind, args, batches), final_weights(kind, args, batches)
        same = all(torch.equal(a[n], b[n]) for n in a)
        print(
            f"| {kind} | {off:.3f} | {on:.3f} | {on / off:.2f} | {'bit-identical' if same else 'DIFFER'} |", flush=True
        )


if __name__ == "__main__":
    main()
