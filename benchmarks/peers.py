"""Side-by-side of SAE trainers: ours against SAELens, EleutherAI's sparsify and overcomplete.

Same real activations (an activation cache of this project), the same batch tensors in the same order,
the same number of steps and tokens, Adam with the same learning rate (or the same grid of rates, ``--lr A B
...``, with each library then reported at its own best rate: their recipes differ in decoder scale and
input normalisation, so one shared rate favours some of them), and ONE held-out metric formula computed
here in float64 for every library. Each library otherwise keeps its own training recipe
(initialisation, decoder-norm handling, gradient clipping, dead-latent handling, loss normalisation,
lr schedule), driven through its public training-step API:

====================  =========================================================================================
library               what is driven, and which of its defaults are kept
====================  =========================================================================================
ours (sae-repro)      ``repro.train.train`` on ``repro.sae.create(kind, ...)`` with the defaults of
                      ``TrainConfig`` and of the kind's config at run time (see :func:`train_ours`; the JSON
                      records both resolved). At the time of writing: a sample of the first 65,536 training
                      tokens sets the input scale (x_n = c x, E||x_n||^2 = d, undone in ``decode``) and b_dec
                      (geometric median); W_enc = W_dec^T, b_enc = 0; TopK: unit-norm decoder with the
                      parallel gradient removed, AuxK 1/32 with a dead window scaled to the run; ReLU:
                      decoder-norm-weighted L1 on normalised inputs, free decoder norms; gradient norm
                      clipped at 1.0; lr warm-up over the first 10 % of the steps (500 at most), linear
                      decay to 0 over the last 20 %.
sae_lens (SAELens)    ``SAETrainer.step(batch)`` (its public step seam, as ``fit`` calls it, with
                      ``maybe_reset_sparsity`` and ``n_training_steps`` as in ``fit``) on ``TopKTrainingSAE`` /
                      ``StandardTrainingSAE``. Init kaiming-uniform decoder rescaled to norm 0.1
                      (``decoder_init_norm``), W_enc = W_dec^T, b_dec = 0; TopK with
                      ``rescale_acts_by_decoder_norm`` (no decoder renormalisation), AuxK coefficient 1 on
                      latents silent for ``dead_feature_window`` = 1000 steps (so never within 1000 steps);
                      ReLU: L1 of acts x decoder norms, mean over tokens (our form, on raw activations);
                      ``clip_grad_norm_(1.0)``; constant lr (``SAETrainerConfig`` defaults);
                      ``normalize_activations="none"``.
sparsify (eai)        ``sparsify.SparseCoder`` forward/backward with the step logic of ``sparsify.Trainer.fit``
                      reproduced line by line (the Trainer itself needs a Hugging Face model and token dataset
                      and cannot take activation batches). Init: ``nn.Linear`` encoder, W_dec = encoder rows
                      normalised to unit norm, b_dec = mean of the first batch; decoder renormalised before
                      every forward and the parallel gradient removed; loss = FVU (batch variance normalised);
                      AuxK off (``auxk_alpha`` = 0 by default); no clipping; Adam branch of its Trainer
                      (torch Adam when bitsandbytes is absent) with ``get_linear_schedule_with_warmup``
                      (1000 warm-up steps, linear decay to 0 at the last step). TopK only: sparsify has no
                      ReLU/L1 SAE. On CPU its eager ``embedding_bag`` decoder (``SPARSIFY_DISABLE_TRITON=1``,
                      its own switch; the Triton kernel needs a GPU).
overcomplete          ``overcomplete.sae.train_sae`` called once per step on a one-batch "dataloader"
                      (``nb_epochs=1, monitoring=0``), on ``TopKSAE`` / ``SAE`` with the default ``linear``
                      encoder (``nn.Linear`` with its default init and bias, then ReLU) and a
                      ``DictionaryLayer`` (xavier-uniform, projected to unit-norm rows before every use, NO
                      decoder bias); ``clip_grad=1.0`` (its default); no scheduler. TopK criterion: plain
                      per-element MSE (its README); ReLU: ``mse_l1``, i.e. per-element MSE +
                      penalty x (sum of |z| over the whole batch). Its package import needs
                      ``matplotlib.cm.get_cmap`` (gone in matplotlib 3.9): supplied in this process only.
====================  =========================================================================================

Metrics, on the held-out tokens (the last ``--heldout`` tokens of the cache, moved back to an example
boundary; never trained on), from each model's reconstruction x_hat and code z, in float64:
NMSE = sum ||x - x_hat||^2 / sum ||x||^2; EV = 1 - sum ||x - x_hat||^2 / sum ||x - mean(x)||^2 (mean over
the held-out tokens); L0 = mean count of nonzero latents per token; dead = share of latents that are zero on
every held-out token. No peer normalises its inputs with these defaults (SAELens's ``ActivationScaler`` is
applied and undone around its evaluation anyway, so a ``normalize_activations`` change would still be
measured in raw units); ours scales its inputs by c inside ``encode`` and undoes it inside ``decode``, so
its ``forward`` returns raw units. Each codec was checked against the library's own forward.

Step times: ours drives the loop (its real trainer, through ``on_step``; the harness drives when ours is
not in ``--libs``); after each of our steps, every peer does the same step on the same batch tensor, in an
order rotated at every step, with a plain GEMM (batch x d_in @ d_in x d_sae) as calibration;
``torch.set_num_threads(--threads)``; peers run with torch's deterministic-algorithms switch off (ours sets
it during its own steps). Our step time runs from the harness handing control back to our trainer's next
``on_step``, less the time spent building batches: it includes our per-step bookkeeping (finiteness checks,
clipping, the log row). Medians over the steps after ``--timing-warmup`` (>= 1: step 1 holds our
data-dependent init) warm-up steps, excluding the last step (ours writes its checkpoint there); ratios are
to ours in the same loop (performance.md section 9); the JSON keeps every raw time.

L1 coefficients: ``--l1`` values are in NORMALISED units: lambda of
mean_t ||x_n - x_hat_n||^2 + lambda mean_t sum_i a_ti ||W_dec,i|| with x_n = c x, c = sqrt(d / mean ||x||^2)
over the training tokens (Anthropic's April 2024 convention, lambda ~ 5; our ReLU's own units). Converted
per library to the same objective up to a constant factor: SAELens (raw activations, same penalty form)
lambda / c; overcomplete (per-element mean squared error, penalty summed over the batch, unit-norm
dictionary) lambda / (c * batch_size * d_in). ``--relu-coef LIB=V[,V...]`` sets a library's coefficients
in its own units instead (the table shows both). The i-th coefficient of every library trains in the i-th
ReLU group (one interleaved loop each). The conversion makes the objectives match, not the L0: compare L0.

    /work/peers-venv/bin/python benchmarks/peers.py --cache /work/peer-cache/pointer.json --quick
    /work/peers-venv/bin/python benchmarks/peers.py --cache /work/peer-cache/pointer.json --out /tmp/peers.json
    /work/peers-venv/bin/python benchmarks/peers.py --cache /work/peer-cache/pointer.json --schedule constant

``--quick`` (40 steps of 1,024 tokens, expansion 2) checks the pipeline end to end in well under a minute;
its numbers compare nothing (our 500-step and sparsify's 1000-step warm-ups have barely started). The full
default run (500 steps of 4,096 tokens, expansion 4, both kinds) needs about 1.5-4 s per step for the TopK
group (four libraries and the GEMM) and 1-2.6 s for the ReLU group on 2 busy cores: roughly 25-60
minutes in all (run it in the background; progress lines go to stderr, the table to stdout).

Run it in a virtual environment holding the peers next to the project (they are not project
dependencies): ``python -m venv --system-site-packages /work/peers-venv`` and
``/work/peers-venv/bin/pip install sae-lens eai-sparsify overcomplete -c <(echo torch==2.14.1)``.
A peer that cannot be imported is skipped with a message. ``--schedule constant`` removes every lr warm-up
and decay (ours and sparsify are the ones that have them).
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import dataclasses
import hashlib
import importlib.metadata
import json
import math
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import torch

LIBRARIES = ("ours", "sae_lens", "sparsify", "overcomplete")
DISTRIBUTIONS = {
    "ours": "sae-repro",
    "sae_lens": "sae-lens",
    "sparsify": "eai-sparsify",
    "overcomplete": "overcomplete",
}
KINDS = ("topk", "relu")
DEFAULTS = dict(
    steps=500,
    batch_size=4096,
    expansion=4,
    heldout=24_576,
    eval_at="50,100,250,500",
    max_train_tokens=1 << 20,
    timing_warmup=3,
)
QUICK = dict(
    steps=40, batch_size=1024, expansion=2, heldout=4096, eval_at="10,20,40", max_train_tokens=1 << 15, timing_warmup=2
)

Codec = Callable[[torch.Tensor], tuple[torch.Tensor, torch.Tensor]]  # x -> (x_hat, code), raw units


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def version(lib: str) -> str | None:
    try:
        return importlib.metadata.version(DISTRIBUTIONS[lib])
    except importlib.metadata.PackageNotFoundError:
        return None


def sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


@contextlib.contextmanager
def deterministic(enabled: bool) -> Iterator[None]:
    """torch's deterministic-algorithms switch set to ``enabled`` inside the block, restored after."""
    was, warn_only = torch.are_deterministic_algorithms_enabled(), torch.is_deterministic_algorithms_warn_only_enabled()
    torch.use_deterministic_algorithms(enabled, warn_only=True)
    try:
        yield
    finally:
        torch.use_deterministic_algorithms(was, warn_only=warn_only)


# ----- data ------------------------------------------------------------------------------------------
def open_cache(path: str):
    """An ActivationCache from a cache folder or a pointer JSON with key "cache"."""
    from repro.cache import ActivationCache

    p = Path(path)
    if p.is_file():
        p = Path(json.loads(p.read_text())["cache"])
    return ActivationCache.open(p)


class Data:
    """Training tokens (in memory), held-out tokens, and the seeded batch plan: step i uses rows
    ``perm_e[j*B:(j+1)*B]`` of the training tokens, e = i // (n_train // B), j = i % (n_train // B), with
    ``perm_e = default_rng([seed, e]).permutation(n_train)`` (a new permutation each epoch; the last
    partial batch of an epoch is dropped). ``batch(i)`` builds the tensor that every library gets."""

    def __init__(self, args):
        cache = open_cache(args.cache)
        self.cache_path, self.d_model, n = str(cache.path), cache.d_model, cache.n_tokens
        if args.heldout >= n:
            raise SystemExit(f"--heldout {args.heldout} leaves no training tokens (the cache holds {n})")
        split = n - args.heldout
        example = cache.index()[:, 0]
        while split > 0 and example[split - 1] == example[split]:  # no example on both sides
            split -= 1
        self.split = split
        self.n_train = min(split, args.max_train_tokens or split)
        if self.n_train < args.batch_size:
            raise SystemExit(f"{self.n_train} training tokens: fewer than one batch of {args.batch_size}")
        self.train = cache.tokens(0, self.n_train)
        self.heldout = cache.tokens(split, n)
        self.batch_size, self.seed, self.steps = args.batch_size, args.seed, args.steps
        self.per_epoch = self.n_train // args.batch_size
        self._epoch, self._perm = -1, None
        self.spec = {
            "cache": self.cache_path,
            "d_model": self.d_model,
            "n_tokens": n,
            "split_at": split,
            "n_train_used": self.n_train,
            "n_heldout": n - split,
            "epochs": args.steps / self.per_epoch,
            "batch_plan_sha256": self.fingerprint(),
        }

    def indices(self, i: int) -> np.ndarray:
        epoch, j = divmod(i, self.per_epoch)
        if epoch != self._epoch:
            self._epoch, self._perm = epoch, np.random.default_rng([self.seed, epoch]).permutation(self.n_train)
        return self._perm[j * self.batch_size : (j + 1) * self.batch_size]

    def batch(self, i: int) -> torch.Tensor:
        return self.train[torch.from_numpy(self.indices(i))]

    def fingerprint(self) -> str:
        h = hashlib.sha256()
        for i in range(self.steps):
            h.update(self.indices(i).astype("<i8").tobytes())
        return h.hexdigest()


class HeldoutMetric:
    """The one metric formula (module docstring), float64, on chunks of the held-out tokens."""

    def __init__(self, heldout: torch.Tensor, device: str, chunk: int = 4096):
        self.x, self.device, self.chunk = heldout, device, chunk
        x = heldout.double()
        self.sum_sq = float(x.pow(2).sum())
        self.total_var = float((x - x.mean(0)).pow(2).sum())

    @torch.no_grad()
    def __call__(self, codec: Codec) -> dict[str, float]:
        sse, nonzero, fired = 0.0, 0, None
        for lo in range(0, len(self.x), self.chunk):
            x = self.x[lo : lo + self.chunk]
            x_hat, code = codec(x.to(self.device))
            code = code.to_dense() if code.is_sparse else code
            sse += float((x.double() - x_hat.detach().cpu().double()).pow(2).sum())
            nz = code.detach().cpu() != 0
            nonzero += int(nz.sum())
            fired = nz.any(0) if fired is None else fired | nz.any(0)
        return {
            "nmse": sse / self.sum_sq,
            "ev": 1 - sse / self.total_var,
            "l0": nonzero / len(self.x),
            "dead": float((~fired).double().mean()),
        }


# ----- ours ------------------------------------------------------------------------------------------
def train_ours(kind: str, batches, heldout: torch.Tensor, args, on_step=None) -> tuple[Codec, dict]:
    """Train our SAE of ``kind`` with our trainer and its defaults on ``batches`` (a re-iterable yielding
    the same ``args.steps`` tensors each time; our trainer may read ahead or iterate twice), calling
    ``on_step(step, codec)`` after each step (1-based;
    ``codec(x) -> (x_hat, code)``, x_hat in raw units). ``heldout`` is never trained on: the harness
    evaluates through ``codec`` (it is not given to ``train(validation=...)``, whose evaluations would
    land inside our timed steps). ``args``: d_in, d_sae, k, l1_coefficient (our = normalised units), lr, steps, seed,
    schedule, device. Returns ``(codec, settings)``. THE place to update when our API changes."""
    from repro.sae import create
    from repro.train import TrainConfig, train

    hparams = {"k": args.k} if kind == "topk" else {"l1_coefficient": args.l1_coefficient}
    sae = create(kind, args.d_in, args.d_sae, seed=args.seed, **hparams).to(args.device)
    # our recipe, with the warm-up scaled to the run (TrainConfig's 500 steps would span a 500-step run)
    schedule = (
        {"warmup_steps": 0, "decay": "none"}
        if args.schedule == "constant"
        else {"warmup_steps": max(1, min(500, args.steps // 10))}
    )
    cfg = TrainConfig(steps=args.steps, lr=args.lr, seed=args.seed, progress=False, **schedule)

    @torch.no_grad()
    def codec(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        was = sae.training
        sae.eval()
        try:
            return sae(x)  # (x_hat, acts): our forward undoes its input normalisation
        finally:
            sae.train(was)

    with tempfile.TemporaryDirectory(prefix="peers-ours-") as run_dir:
        hook = (lambda step, parts: on_step(step, codec)) if on_step else None
        result = train(sae, batches, cfg, run_dir, on_step=hook)
    record = getattr(result, "record", None) or {}
    keep = ("data_init", "finish", "dead_window_tokens", "warnings")
    return codec, {
        "sae_config": dataclasses.asdict(sae.cfg),
        "train_config": dataclasses.asdict(cfg),
        **{k: record[k] for k in keep if isinstance(record, dict) and k in record},
    }


# ----- peers -----------------------------------------------------------------------------------------
class Peer:
    """One peer model and its optimiser state: ``step(batch)`` does one training step the way its library
    does, ``codec(x)`` gives (x_hat, code) in raw units. ``coef``: L1 coefficient in its own units."""

    library: str

    def __init__(self, kind: str, coef: float | None, args):
        self.kind, self.coef, self.args = kind, coef, args
        self.settings: dict = {}

    def step(self, x: torch.Tensor) -> None:
        raise NotImplementedError

    def codec(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        raise NotImplementedError


class SAELensPeer(Peer):
    library = "sae_lens"

    def __init__(self, kind, coef, args):
        super().__init__(kind, coef, args)
        from sae_lens import (
            LoggingConfig,
            SAETrainer,
            StandardTrainingSAE,
            StandardTrainingSAEConfig,
            TopKTrainingSAE,
            TopKTrainingSAEConfig,
        )
        from sae_lens.config import SAETrainerConfig

        torch.manual_seed(args.seed)  # its init draws from the global RNG (kaiming_uniform_)
        if kind == "topk":  # defaults kept: aux_loss_coefficient=1, rescale_acts_by_decoder_norm, init norm 0.1
            sae = TopKTrainingSAE(TopKTrainingSAEConfig(d_in=args.d_in, d_sae=args.d_sae, k=args.k, device=args.device))
        else:  # L1 of acts x decoder norms, mean over tokens; l1_warm_up_steps=0; init norm 0.1
            sae = StandardTrainingSAE(
                StandardTrainingSAEConfig(d_in=args.d_in, d_sae=args.d_sae, l1_coefficient=coef, device=args.device)
            )
        # SAETrainerConfig defaults: constant lr, no warm-up, dead_feature_window=1000 steps; lr_end = lr / 10
        # as its runner config sets it (unused by "constant"). The trainer clips the grad norm at 1.0.
        tcfg = SAETrainerConfig(
            total_training_samples=args.steps * args.batch_size,
            train_batch_size_samples=args.batch_size,
            lr=args.lr,
            lr_end=args.lr / 10,
            device=args.device,
            logger=LoggingConfig(log_to_wandb=False),
        )
        self.trainer = SAETrainer(cfg=tcfg, sae=sae, data_provider=iter(()))
        self.settings = {
            "sae_config": {k: str(v) for k, v in vars(sae.cfg).items()},
            "schedule": tcfg.lr_scheduler_name,
            "clip": "grad norm 1.0",
            "normalize_activations": sae.cfg.normalize_activations,
        }

    def step(self, x):
        t = self.trainer  # what SAETrainer.fit does per iteration, minus wandb/checkpoint/progress bar
        t.maybe_reset_sparsity()
        t.step(x)
        t.n_training_steps += 1

    @torch.no_grad()
    def codec(self, x):
        sae, scaler = self.trainer.sae, self.trainer.activation_scaler
        acts = sae.encode(scaler.scale(x))
        return scaler.unscale(sae.decode(acts)), acts


class SparsifyPeer(Peer):
    library = "sparsify"
    DEAD_FEATURE_THRESHOLD = 10_000_000  # sparsify TrainConfig default (tokens)
    LR_WARMUP_STEPS = 1000  # sparsify TrainConfig.lr_warmup_steps default (used by its Adam branch)

    def __init__(self, kind, coef, args):
        super().__init__(kind, coef, args)
        if kind != "topk":
            raise NotImplementedError(
                "sparsify has no ReLU/L1 SAE (SparseCoderConfig.activation is 'topk' or 'groupmax')"
            )
        from sparsify import SparseCoder, SparseCoderConfig

        torch.manual_seed(args.seed)  # its Trainer seeds torch before building each coder (init_seeds=[0])
        cfg = SparseCoderConfig(activation="topk", num_latents=args.d_sae, k=args.k, normalize_decoder=True)
        self.sae = SparseCoder(args.d_in, cfg, device=args.device, dtype=torch.float32)
        # Its Adam branch: lr default 2e-4 / sqrt(num_latents / 2**14), replaced by the common --lr;
        # transformers' linear schedule with warm-up over num_batches (= our steps).
        self.opt = torch.optim.Adam(self.sae.parameters(), lr=args.lr)
        self.sched = None
        if args.schedule == "library":
            from transformers import get_linear_schedule_with_warmup

            self.sched = get_linear_schedule_with_warmup(self.opt, self.LR_WARMUP_STEPS, args.steps)
        self.auxk_alpha = args.sparsify_auxk_alpha
        self.tokens_since_fired = torch.zeros(args.d_sae, dtype=torch.long, device=args.device)
        self.global_step = 0
        self.settings = {
            "sae_config": dataclasses.asdict(cfg),
            "auxk_alpha": self.auxk_alpha,
            "loss": "fvu",
            "clip": "none",
            "schedule": (f"linear warm-up {self.LR_WARMUP_STEPS} steps, linear decay to 0 at step {args.steps}")
            if self.sched
            else "constant",
        }

    def step(self, x):
        sae = self.sae  # sparsify.Trainer.fit, loss_fn="fvu", grad_acc_steps = micro_acc_steps = 1
        if self.global_step == 0:
            sae.b_dec.data = x.mean(0).to(sae.dtype)  # "ensure the preactivations are centered at init"
        sae.set_decoder_norm_to_unit_norm()
        dead_mask = self.tokens_since_fired > self.DEAD_FEATURE_THRESHOLD if self.auxk_alpha > 0 else None
        total_variance = (x - x.mean(0)).pow(2).sum()
        out = sae(x=x, y=x, dead_mask=dead_mask, total_variance=total_variance)
        did_fire = torch.zeros(sae.num_latents, dtype=torch.bool, device=x.device)
        did_fire[out.latent_indices.flatten()] = True
        loss = out.fvu + self.auxk_alpha * out.auxk_loss + out.multi_topk_fvu / 8
        loss.backward()
        sae.remove_gradient_parallel_to_decoder_directions()
        self.opt.step()
        self.opt.zero_grad()
        if self.sched is not None:
            self.sched.step()
        with torch.no_grad():
            self.tokens_since_fired += x.shape[0]
            self.tokens_since_fired[did_fire] = 0
        self.global_step += 1

    @torch.no_grad()
    def codec(self, x):
        top_acts, top_indices, _ = self.sae.encode(x)
        x_hat = self.sae.decode(top_acts, top_indices)
        code = torch.zeros(x.shape[0], self.sae.num_latents, dtype=top_acts.dtype, device=x.device)
        return x_hat, code.scatter_(1, top_indices, top_acts)


def import_overcomplete():
    """overcomplete 0.3's package import builds colormaps with ``matplotlib.cm.get_cmap``, removed in
    matplotlib 3.9: provide it (in this process only) from ``matplotlib.colormaps``."""
    try:
        import matplotlib.cm

        if not hasattr(matplotlib.cm, "get_cmap"):
            matplotlib.cm.get_cmap = lambda name=None, lut=None: (
                matplotlib.colormaps[name] if lut is None else matplotlib.colormaps[name].resampled(lut)
            )
    except ImportError:
        pass
    import overcomplete.sae

    return overcomplete.sae


class OvercompletePeer(Peer):
    library = "overcomplete"

    def __init__(self, kind, coef, args):
        super().__init__(kind, coef, args)
        oc = import_overcomplete()
        from overcomplete.sae.losses import mse_l1

        self.train_sae = oc.train_sae
        torch.manual_seed(args.seed)  # nn.Linear and xavier_uniform_ draw from the global RNG
        if kind == "topk":
            self.model = oc.TopKSAE(args.d_in, nb_concepts=args.d_sae, top_k=args.k, device=args.device)
            self.criterion = lambda x, x_hat, pre, z, dictionary: (x - x_hat).square().mean()  # its README
            loss = "mean over batch x d_in of (x - x_hat)^2"
        else:
            self.model = oc.SAE(args.d_in, nb_concepts=args.d_sae, device=args.device)
            self.criterion = lambda x, x_hat, pre, z, dictionary: mse_l1(x, x_hat, pre, z, dictionary, penalty=coef)
            loss = "mse_l1: mean over batch x d_in of (x - x_hat)^2 + penalty * sum over the batch of |z|"
        self.opt = torch.optim.Adam(self.model.parameters(), lr=args.lr)
        self.settings = {
            "loss": loss,
            "clip": "grad norm 1.0 (train_sae default)",
            "schedule": "constant (none)",
            "decoder_bias": False,
            "dictionary": "unit-norm rows (projected before use)",
        }

    def step(self, x):
        self.train_sae(
            self.model,
            [x],
            self.criterion,
            self.opt,
            scheduler=None,
            nb_epochs=1,
            clip_grad=1.0,
            monitoring=0,
            device=self.args.device,
        )

    @torch.no_grad()
    def codec(self, x):
        self.model.eval()  # fuses the (normalised) dictionary, as its inference path does
        try:
            _, z = self.model.encode(x)
            return self.model.decode(z), z
        finally:
            self.model.train()


PEERS = {"sae_lens": SAELensPeer, "sparsify": SparsifyPeer, "overcomplete": OvercompletePeer}


# ----- coefficients ----------------------------------------------------------------------------------
def parse_relu_coefs(entries: list[str]) -> dict[str, list[float]]:
    out: dict[str, list[float]] = {}
    for entry in entries:
        lib, sep, values = entry.partition("=")
        if not sep or lib not in LIBRARIES:
            raise SystemExit(f"--relu-coef {entry!r}: expected LIB=V[,V...] with LIB in {', '.join(LIBRARIES)}")
        out.setdefault(lib, []).extend(float(v) for v in values.split(",") if v)
    return out


def coef_factor(lib: str, args) -> float:
    """Native coefficient = normalised-units coefficient x this factor (module docstring). ``args.c`` is the
    input scale sqrt(d / mean ||x||^2) of the training tokens."""
    if lib == "ours":
        return 1.0
    if lib == "sae_lens":
        return 1.0 / args.c
    if lib == "overcomplete":
        return 1.0 / (args.c * args.batch_size * args.d_in)
    raise ValueError(lib)


# ----- the interleaved loop --------------------------------------------------------------------------
class BatchStream:
    """Re-iterable over batch 0, 1, ... (``Data.batch``). Every tensor it yields is kept, with its checksum,
    until the harness has given it to the peers (``take``), and an iteration that reaches a kept batch
    yields that same tensor again; so our trainer may read ahead (as it does for its data sample) or
    iterate twice, and step i of every library still gets the i-th tensor. ``build_s``: seconds spent
    building batches (subtracted from our step times)."""

    def __init__(self, data: Data, args):
        self.data, self.args = data, args
        self.kept: dict[int, tuple[torch.Tensor, float]] = {}
        self.taken = -1
        self.build_s = 0.0

    def __iter__(self) -> Iterator[torch.Tensor]:
        for i in range(self.args.steps):
            t0 = time.perf_counter()
            if i not in self.kept:
                if i <= self.taken:
                    raise RuntimeError(f"batch {i} was requested again after step {i + 1} was done")
                b = self.data.batch(i).to(self.args.device)
                self.kept[i] = (b, float(b.double().sum()))
            self.build_s += time.perf_counter() - t0
            yield self.kept[i][0]

    def take(self, i: int) -> tuple[torch.Tensor, float]:
        """Batch i and its checksum (built here when our trainer is not driving), then forgotten."""
        if i not in self.kept:
            b = self.data.batch(i).to(self.args.device)
            self.kept[i] = (b, float(b.double().sum()))
        self.taken = i
        return self.kept.pop(i)


def run_group(kind: str, coefs: dict[str, float | None], data: Data, metric: HeldoutMetric, args) -> list[dict]:
    """Train ours (when in ``coefs``) and every peer in ``coefs`` on the same batches, step by step;
    evaluate at the eval steps; time every step. Returns one record per library, and one for the GEMM."""
    peers: list[Peer] = []
    records: dict[str, dict] = {}
    for lib, coef in coefs.items():
        records[lib] = {
            "library": lib,
            "version": version(lib),
            "kind": kind,
            "coef": coef,
            "coef_normalised_units": None if coef is None else coef / coef_factor(lib, args),
            "evals": {},
            "step_seconds": [],
        }
        if lib == "ours":
            continue
        try:
            peer = PEERS[lib](kind, coef, args)
        except NotImplementedError as e:
            print(f"[skip] {lib} {kind}: {e}", flush=True)
            records.pop(lib)
            continue
        peers.append(peer)
        records[lib]["settings"] = peer.settings
    gemm_w = torch.randn(args.d_in, args.d_sae, generator=torch.Generator().manual_seed(args.seed)).to(args.device)
    records["gemm"] = {
        "library": "gemm",
        "version": None,
        "kind": kind,
        "coef": None,
        "coef_normalised_units": None,
        "evals": {},
        "step_seconds": [],
        "settings": {"what": f"({args.batch_size} x {args.d_in}) @ ({args.d_in} x {args.d_sae}), fp32"},
    }
    timed: list[tuple[str, Callable]] = [(p.library, p.step) for p in peers] + [("gemm", lambda x: torch.mm(x, gemm_w))]
    stream = BatchStream(data, args)
    clock = {"end": time.perf_counter(), "build": 0.0}  # when the harness last handed back control
    began = time.perf_counter()

    def evaluate(step: int, codecs: list[tuple[str, Codec]], note: str = "") -> None:
        for lib, codec in codecs:
            records[lib]["evals"][step] = metric(codec)
        log(
            f"  {kind} step {step}/{args.steps}{note} ({time.perf_counter() - began:.0f} s): "
            + ", ".join(
                f"{lib} NMSE {records[lib]['evals'][step]['nmse']:.4f} L0 {records[lib]['evals'][step]['l0']:.1f}"
                for lib, _ in codecs
            )
        )

    def after_step(step: int, ours_codec: Codec | None = None) -> None:
        if ours_codec is not None:  # our step: since the harness last returned, less batch building
            sync(args.device)
            elapsed = time.perf_counter() - clock["end"] - (stream.build_s - clock["build"])
            records["ours"]["step_seconds"].append(elapsed)
        b, checksum = stream.take(step - 1)
        r = step % len(timed)
        with deterministic(False):  # the peers' own setting (ours switches it on for its steps)
            for lib, fn in timed[r:] + timed[:r]:
                sync(args.device)
                t0 = time.perf_counter()
                fn(b)
                sync(args.device)
                records[lib]["step_seconds"].append(time.perf_counter() - t0)
        if float(b.double().sum()) != checksum:
            raise RuntimeError(f"step {step}: a library modified the shared batch in place")
        if step in args.eval_steps:
            evaluate(
                step, ([("ours", ours_codec)] if ours_codec is not None else []) + [(p.library, p.codec) for p in peers]
            )
        clock["end"], clock["build"] = time.perf_counter(), stream.build_s

    if "ours" in coefs:
        ours_args = copy.copy(args)
        ours_args.l1_coefficient = coefs["ours"]
        codec, records["ours"]["settings"] = train_ours(kind, stream, data.heldout, ours_args, on_step=after_step)
        if len(records["ours"]["step_seconds"]) != args.steps:
            raise RuntimeError("our trainer did not call on_step once per step")
        evaluate(args.steps, [("ours", codec)], " after train() returned")  # i.e. after finish_training
    else:
        for step in range(1, args.steps + 1):
            after_step(step)
    lo, hi = args.timing_warmup, args.steps - 1  # warm-up steps out; the last (our checkpoint) out
    for rec in records.values():
        window = rec["step_seconds"][lo:hi] or rec["step_seconds"]
        rec["timed_steps"] = [lo + 1, hi] if rec["step_seconds"][lo:hi] else [1, len(rec["step_seconds"])]
        rec["median_step_s"] = statistics.median(window) if window else None
    ref = records["ours"]["median_step_s"] if "ours" in records else None
    for rec in records.values():
        rec["ratio_to_ours"] = rec["median_step_s"] / ref if ref and rec["median_step_s"] else None
    return [records[k] for k in ("ours", *LIBRARIES[1:], "gemm") if k in records]


# ----- output ----------------------------------------------------------------------------------------
def best_of_grid(rows: list[dict], last: int) -> list[dict]:
    """For each (library, kind, coefficient), the row whose final held-out NMSE is lowest over the lr grid
    (the GEMM calibration rows are left out). A ReLU coefficient gives a different L0 at each rate, so its
    best-NMSE row may simply be the densest one: compare ReLU rows at matched L0, not by this table."""
    best: dict[tuple, dict] = {}
    for r in rows:
        if r["library"] == "gemm":
            continue
        key = (r["library"], r["kind"], r["coef"])
        nmse = r["evals"].get(last, {}).get("nmse", math.inf)
        if key not in best or nmse < best[key]["evals"].get(last, {}).get("nmse", math.inf):
            best[key] = r
    return list(best.values())


def fmt(v, spec: str) -> str:
    return "–" if v is None or (isinstance(v, float) and not math.isfinite(v)) else format(v, spec)


def markdown(rows: list[dict], eval_steps: list[int]) -> str:
    head = (
        ["library", "version", "kind", "coef (own units)", "lr"]
        + [f"NMSE@{s}" for s in eval_steps]
        + ["EV", "L0", "dead %", "median step s", "× ours"]
    )
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    last = eval_steps[-1]
    for r in rows:
        final = r["evals"].get(last, {})
        coef = (
            "–"
            if r["coef"] is None
            else f"{r['coef']:.4g}" + (f" (= {r['coef_normalised_units']:.4g})" if r["library"] != "ours" else "")
        )
        cells = [r["library"], r["version"] or "–", r["kind"], coef, fmt(r.get("lr"), "g")]
        cells += [fmt(r["evals"].get(s, {}).get("nmse"), ".4f") for s in eval_steps]
        cells += [
            fmt(final.get("ev"), ".4f"),
            fmt(final.get("l0"), ".1f"),
            fmt(None if "dead" not in final else 100 * final["dead"], ".2f"),
            fmt(r["median_step_s"], ".4f"),
            fmt(r["ratio_to_ours"], ".2f"),
        ]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def parse_args(argv=None):
    p = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--cache", required=True, help="activation cache folder, or a pointer JSON with key 'cache'")
    p.add_argument(
        "--quick",
        action="store_true",
        help=f"end-to-end check: {QUICK['steps']} steps of {QUICK['batch_size']} tokens, expansion "
        f"{QUICK['expansion']}, {QUICK['heldout']} held-out tokens (explicit options still win)",
    )
    p.add_argument("--libs", default=",".join(LIBRARIES), help="comma-separated subset of " + ", ".join(LIBRARIES))
    p.add_argument("--kinds", default=",".join(KINDS), help="topk, relu or both")
    p.add_argument("--steps", type=int, help=f"optimiser steps (default {DEFAULTS['steps']})")
    p.add_argument("--batch-size", type=int, help=f"tokens per step (default {DEFAULTS['batch_size']})")
    p.add_argument(
        "--heldout", type=int, help=f"held-out tokens at the end of the cache (default {DEFAULTS['heldout']})"
    )
    p.add_argument("--expansion", type=int, help=f"d_sae / d_in (default {DEFAULTS['expansion']})")
    p.add_argument("--eval-at", help=f"comma-separated steps (default {DEFAULTS['eval_at']}; the last step is added)")
    p.add_argument(
        "--max-train-tokens",
        type=int,
        help=f"use at most this many training tokens, the first ones (memory; default "
        f"{DEFAULTS['max_train_tokens']}; 0 = all)",
    )
    p.add_argument(
        "--timing-warmup", type=int, help=f"steps left out of the medians (default {DEFAULTS['timing_warmup']})"
    )
    p.add_argument("--k", type=int, default=32)
    p.add_argument(
        "--lr",
        type=float,
        nargs="+",
        default=[3e-4],
        help="Adam learning rate(s): every group trains once per value; with several, a best-of-grid "
        "table (each library at its own best lr) follows the full one",
    )
    p.add_argument(
        "--l1",
        type=float,
        nargs="+",
        default=[5.0],
        help="ReLU L1 coefficient(s) in normalised units (module docstring), converted per library",
    )
    p.add_argument(
        "--relu-coef",
        nargs="*",
        default=[],
        metavar="LIB=V[,V...]",
        help="per-library ReLU coefficient(s) in the library's own units (override --l1)",
    )
    p.add_argument(
        "--schedule",
        choices=("library", "constant"),
        default="library",
        help="library: each library's lr schedule defaults; constant: no warm-up/decay anywhere",
    )
    p.add_argument("--sparsify-auxk-alpha", type=float, default=0.0, help="sparsify's auxk_alpha (its default 0)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--device", default="cpu")
    p.add_argument("--out", help="write everything as JSON here")
    args = p.parse_args(argv)
    base = QUICK if args.quick else DEFAULTS
    for key, value in base.items():
        if getattr(args, key) is None:
            setattr(args, key, value)
    args.libs = [x for x in args.libs.split(",") if x]
    args.kinds = [x for x in args.kinds.split(",") if x]
    bad = [x for x in args.libs if x not in LIBRARIES] + [x for x in args.kinds if x not in KINDS]
    if bad:
        p.error(f"unknown library or kind: {', '.join(bad)}")
    if args.timing_warmup < 1:
        p.error("--timing-warmup must be >= 1 (step 1 holds our data-dependent initialisation)")
    args.eval_steps = sorted(
        {s for s in (int(v) for v in args.eval_at.split(",") if v) if 0 < s <= args.steps} | {args.steps}
    )
    return args


def available_peers(libs: list[str]) -> tuple[list[str], dict[str, str]]:
    ok, skipped = [], {}
    for lib in libs:
        if lib == "ours":
            ok.append(lib)
            continue
        try:
            import_overcomplete() if lib == "overcomplete" else __import__(lib)
            ok.append(lib)
        except Exception as e:  # any import failure: skip the peer, say why
            skipped[lib] = f"{type(e).__name__}: {e}"
            print(
                f"[skip] {lib}: cannot import it ({skipped[lib]}); install it with "
                f"`pip install {DISTRIBUTIONS[lib]}` in this environment",
                flush=True,
            )
    return ok, skipped


def main(argv=None) -> int:
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    if not args.device.startswith("cuda"):  # sparsify's own switch (read at import): its Triton decoder needs a GPU
        os.environ.setdefault("SPARSIFY_DISABLE_TRITON", "1")
    libs, skipped = available_peers(args.libs)
    data = Data(args)
    args.d_in, args.d_sae = data.d_model, args.expansion * data.d_model
    mean_sq = sum(float(x.double().pow(2).sum()) for x in data.train.split(65_536)) / data.n_train
    args.c = math.sqrt(args.d_in / mean_sq)
    log(
        f"cache {data.cache_path}: d={data.d_model}, {data.n_train} training tokens used (split at {data.split}), "
        f"{len(data.heldout)} held-out; {args.steps} steps x {args.batch_size} = {args.steps * args.batch_size} tokens "
        f"({data.spec['epochs']:.2f} epochs); d_sae={args.d_sae}, k={args.k}, lr={args.lr}, schedule={args.schedule}, "
        f"{args.threads} threads; input scale c = sqrt(d / mean ||x||^2) = {args.c:.5g}"
    )
    metric = HeldoutMetric(data.heldout, args.device)
    relu_coefs = parse_relu_coefs(args.relu_coef)
    groups: list[tuple[str, dict]] = []
    if "topk" in args.kinds:
        groups.append(("topk", {lib: None for lib in libs}))
    if "relu" in args.kinds:
        relu_libs = [lib for lib in libs if lib != "sparsify"]
        if "sparsify" in libs:
            print(
                "[skip] sparsify relu: sparsify has no ReLU/L1 SAE (SparseCoderConfig.activation is 'topk' "
                "or 'groupmax')",
                flush=True,
            )
        lists = {lib: relu_coefs.get(lib) or [v * coef_factor(lib, args) for v in args.l1] for lib in relu_libs}
        for j in range(max((len(v) for v in lists.values()), default=0)):
            groups.append(("relu", {lib: v[j] for lib, v in lists.items() if j < len(v)}))
    rows: list[dict] = []
    for lr in args.lr:
        lr_args = copy.copy(args)
        lr_args.lr = lr
        for kind, coefs in groups:
            log(
                f"{kind} at lr {lr:g}: "
                + ", ".join(f"{lib}" + ("" if c is None else f" coef {c:.4g}") for lib, c in coefs.items())
            )
            for row in run_group(kind, coefs, data, metric, lr_args):
                rows.append(row | {"lr": lr})
    lrs = ", ".join(f"{v:g}" for v in args.lr)
    print(
        f"\nHeld-out metrics ({len(data.heldout)} tokens of {data.cache_path}) after "
        f"{args.steps} steps x {args.batch_size} tokens; d_sae {args.d_sae}, k {args.k}, Adam lr {lrs}, "
        f"schedule {args.schedule}; step times: medians of steps {args.timing_warmup + 1}..{args.steps - 1}, "
        f"{args.threads} threads, interleaved; × ours within each group.\n"
    )
    print(markdown(rows, args.eval_steps))
    if len(args.lr) > 1:
        print(
            f"\nBest of the lr grid ({lrs}): for each library, kind and coefficient, the lr with the lowest "
            "final held-out NMSE (ReLU: L0 differs between rates, so compare at matched L0 instead).\n"
        )
        print(markdown(best_of_grid(rows, args.eval_steps[-1]), args.eval_steps))
    for lib, why in skipped.items():
        print(f"\nskipped {lib}: {why}")
    if args.out:
        record = {
            "args": {k: v for k, v in vars(args).items()},
            "data": data.spec,
            "versions": {lib: version(lib) for lib in LIBRARIES} | {"torch": torch.__version__},
            "skipped": skipped,
            "rows": rows,
        }
        Path(args.out).write_text(json.dumps(record, indent=1, default=str))
        log(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
