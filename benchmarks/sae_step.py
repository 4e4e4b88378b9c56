"""Time one training step (forward, loss, backward, Adam) of every SAE kind on the same data.

Variants are interleaved in one process (each repetition runs every variant once, starting from a
rotating position), with the same batch, optimiser and thread count; medians of the timed
repetitions are reported with all raw times, the L0 of each timed step, and ratios to the TopK step.
A plain GEMM (tokens x d_in @ d_in x d_sae) is timed in the same loop as a calibration.

    python benchmarks/sae_step.py                      # the issue's setting: 768 / 24576 / 4096 tokens
    python benchmarks/sae_step.py --d-in 64 --d-sae 1024 --tokens 512 --reps 2    # a quick look

``--regime trained`` puts every kind at a trained-like sparsity: the score projections of the sparsemax
kinds are multiplied by 10 (scores x10: a small support, see performance.md), and the ReLU family is set
to a mean L0 of ``--l0`` (default k) on the batch (ReLU and Gated: a common shift of the encoder bias;
JumpReLU: a common threshold; attention + ReLU: a common component removed from the concepts), so
that its sparse training path runs as it would after training; ``init`` keeps every initialisation.
Every linear kind first fits its input scale and b_dec to the batch (as the trainer does).
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from repro.sae import KINDS, create


# label -> (kind, hyperparameters)
def variants(args) -> dict[str, tuple[str, dict]]:
    table: dict[str, tuple[str, dict]] = {}
    for kind in KINDS:
        table[kind] = (kind, {"k": args.k} if kind in ("topk", "batchtopk") else {})
    table["topk[dense]"] = ("topk", {"k": args.k, "decode": "dense"})
    for kind in ("relu", "jumprelu", "gated", "attention_relu"):
        table[f"{kind}[dense]"] = (kind, {"decode": "dense"})
    table["sparsemax_attention[official sort]"] = ("sparsemax_attention", {"impl": "official"})
    return {label: spec for label, spec in table.items() if not args.only or label in args.only}


def activations(tokens: int, d_in: int, seed: int = 0) -> torch.Tensor:
    """A mean vector + a 32-dimensional anisotropic low-rank part + isotropic noise, with per-token
    norms varying x0.5-1.5 (the synthetic inputs of performance.md)."""
    g = torch.Generator().manual_seed(seed)
    mean = torch.randn(d_in, generator=g) * 0.5
    basis = torch.randn(32, d_in, generator=g) / d_in**0.5
    scales = torch.logspace(0, -1.5, 32)
    low_rank = (torch.randn(tokens, 32, generator=g) * scales) @ basis * 4
    x = mean + low_rank + 0.1 * torch.randn(tokens, d_in, generator=g)
    return x * (0.5 + torch.rand(tokens, 1, generator=g))


def mean_l0(sae, x: torch.Tensor) -> float:
    with torch.no_grad():
        return float((sae.encode(x) != 0).sum(-1).double().mean())


@torch.no_grad()
def set_trained_sparsity(sae, x: torch.Tensor, target: float) -> None:
    """Shift the ReLU family's pre-activations by one common amount (bisection) so that mean L0 ~ target."""
    kind = sae.kind
    if kind in ("relu", "gated", "jumprelu"):
        pre = sae.pre_activation(sae.normalise(x)[0])
        shift = float(pre.flatten().kthvalue(int(pre.numel() * (1 - target / sae.cfg.d_sae))).values)
        if kind == "jumprelu":  # the parameter is in units of the inputs' RMS norm (sae.theta())
            sae.threshold.fill_(shift / float(sae.rms_norm))
        else:
            sae.b_enc.sub_(shift)
    elif kind == "attention_relu":
        q = sae.query(torch.nn.functional.normalize(x, dim=-1))
        u = torch.nn.functional.normalize(q.mean(0), dim=0)
        base = sae.concepts.clone()
        lo, hi = 0.0, 10.0 * float(base.norm(dim=1).max())
        for _ in range(40):
            mid = (lo + hi) / 2
            sae.concepts.copy_(base - mid * u)
            lo, hi = (mid, hi) if mean_l0(sae, x) > target else (lo, mid)


class Runner:
    """One model + Adam, stepping on a fixed batch."""

    def __init__(self, kind: str, hparams: dict, args, x: torch.Tensor):
        self.sae = create(kind, args.d_in, args.d_sae, seed=args.seed, **hparams)
        self.sae.fit_to_data(x)
        if args.regime == "trained":
            with torch.no_grad():
                scaled = kind in ("sparsemax_attention", "mlp_sparsemax", "sparsemax_attention_paper")
                for name in ("W_k", "W_enc") if scaled else ():
                    if hasattr(self.sae, name):
                        getattr(self.sae, name).mul_(10)
            set_trained_sparsity(self.sae, x, args.l0 or args.k)
        self.opt = torch.optim.Adam(self.sae.parameters(), lr=1e-5)

    def step(self, x: torch.Tensor) -> tuple[float, float]:
        start = time.perf_counter()
        self.opt.zero_grad(set_to_none=True)
        loss, parts = self.sae.loss(x)
        loss.backward()
        self.sae.constrain_grads()
        self.opt.step()
        self.sae.constrain_weights()
        return time.perf_counter() - start, parts["l0"]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--d-in", type=int, default=768)
    p.add_argument("--d-sae", type=int, default=24576)
    p.add_argument("--tokens", type=int, default=4096)
    p.add_argument("--k", type=int, default=32)
    p.add_argument("--reps", type=int, default=3, help="timed repetitions (after one warm-up)")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--regime", choices=("init", "trained"), default="init")
    p.add_argument("--l0", type=float, help="target mean L0 of the ReLU family in the trained regime (default k)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--only", nargs="*", help="labels of the variants to run (default: all)")
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    x = activations(args.tokens, args.d_in, args.seed)
    specs = variants(args)
    runners = {label: Runner(kind, hp, args, x) for label, (kind, hp) in specs.items()}
    labels = list(runners)
    times: dict[str, list[float]] = {label: [] for label in labels + ["gemm"]}
    l0s: dict[str, list[float]] = {label: [] for label in labels}
    w = torch.randn(args.d_in, args.d_sae)
    print(
        f"d_in={args.d_in} d_sae={args.d_sae} tokens={args.tokens} threads={args.threads} "
        f"regime={args.regime} torch={torch.__version__}",
        flush=True,
    )
    for rep in range(args.reps + 1):
        order = labels[rep % len(labels) :] + labels[: rep % len(labels)]
        for label in order:
            t, l0 = runners[label].step(x)
            if rep:
                times[label].append(t)
                l0s[label].append(l0)
            print(f"  rep {rep}{' (warm-up)' if rep == 0 else ''} {label}: {t:.3f} s, L0 {l0:.1f}", flush=True)
        start = time.perf_counter()
        _ = x @ w
        if rep:
            times["gemm"].append(time.perf_counter() - start)
    gemm = statistics.median(times["gemm"])
    ref = statistics.median(times["topk"]) if "topk" in times and times["topk"] else None
    print(
        f"\nGEMM {args.tokens}x{args.d_in} @ {args.d_in}x{args.d_sae}: {gemm:.3f} s "
        f"({2 * args.tokens * args.d_in * args.d_sae / gemm / 1e9:.1f} GFLOP/s)\n"
    )
    print("| variant | median s | / topk | / GEMM | L0 (median) | all s |")
    print("|---|---|---|---|---|---|")
    for label in labels:
        med = statistics.median(times[label])
        ratio = f"{med / ref:.2f}" if ref else "-"
        raw = ", ".join(f"{t:.2f}" for t in times[label])
        print(f"| {label} | {med:.3f} | {ratio} | {med / gemm:.1f} | {statistics.median(l0s[label]):.1f} | {raw} |")
    if ref:
        worst = max((statistics.median(times[k]) / ref, k) for k in labels if "[" not in k)
        print(f"\nslowest kind / topk = {worst[0]:.2f} ({worst[1]}; target <= 1.5 at trained L0)")
    if ref and "sparsemax_attention" in times and "sparsemax_attention[official sort]" in times:
        ours = statistics.median(times["sparsemax_attention"])
        official = statistics.median(times["sparsemax_attention[official sort]"])
        print(f"\nsparsemax_attention / topk = {ours / ref:.2f} (target <= 1.15)")
        print(f"sparsemax_attention / official sort-based = {ours / official:.2f} (target <= 0.5)")


if __name__ == "__main__":
    main()
