"""The SAE zoo: interface, checkpoints, validation, training on planted features, and equivalences
(official transcription, sparse vs dense paths, custom autograd)."""

from __future__ import annotations

import json
import math
import tempfile

import pytest
import torch

from repro.sae import KINDS, create, load
from repro.sae.jumprelu import JumpReLUFunction, StepFunction
from repro.synthetic import PlantedFeatures
from repro.train import TrainConfig, train

D_IN, D_SAE = 16, 64


def small_hparams(kind: str) -> dict:
    """Hyperparameters valid at toy sizes."""
    return {"k": 4} if kind in ("topk", "batchtopk") else {}


def data(n: int = 96, d: int = D_IN, seed: int = 0, offset: float = 0.5) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, d, generator=g) + offset


def ev(x: torch.Tensor, x_hat: torch.Tensor) -> float:
    r = (x - x_hat).pow(2).sum(-1).mean()
    return float(1 - r / (x - x.mean(0)).pow(2).sum(-1).mean())


@pytest.mark.parametrize("kind", KINDS)
def test_shapes_and_interface(kind):
    sae = create(kind, D_IN, D_SAE, **small_hparams(kind))
    x = data().reshape(4, 24, D_IN)
    acts = sae.encode(x)
    assert acts.shape == (4, 24, D_SAE)
    x_hat, acts2 = sae(x)
    assert x_hat.shape == x.shape and torch.allclose(acts, acts2)
    x_norm = x.norm(dim=-1, keepdim=True)
    assert torch.allclose(sae.decode(acts, x_norm), x_hat, atol=1e-5)
    loss, parts = sae.loss(x)
    assert loss.ndim == 0 and torch.isfinite(loss)
    assert {"loss", "mse", "l0", "l0_max", "dead_fraction"} <= set(parts)
    assert all(isinstance(v, float) for v in parts.values())
    loss.backward()
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in sae.parameters())


@pytest.mark.parametrize("kind", KINDS)
def test_latent_scale_masks_and_keeps(kind):
    sae = create(kind, D_IN, D_SAE, **small_hparams(kind)).eval()
    x = data()
    plain, acts = sae(x)
    same, _ = sae(x, latent_scale=torch.ones(D_SAE))
    assert torch.allclose(plain, same, atol=1e-6)
    off, scaled = sae(x, latent_scale=torch.zeros(D_SAE))
    assert torch.count_nonzero(scaled) == 0
    expected = sae.b_dec.expand_as(x) if hasattr(sae, "b_dec") else torch.zeros_like(x)
    assert torch.allclose(off, expected)


@pytest.mark.parametrize("kind", KINDS)
def test_save_load_round_trip(kind, tmp_path):
    sae = create(kind, D_IN, D_SAE, seed=3, **small_hparams(kind))
    opt = torch.optim.Adam(sae.parameters(), lr=1e-2)
    for step in range(3):  # change weights and the kind's state (counters, masks, thresholds)
        opt.zero_grad()
        sae.loss(data(seed=step))[0].backward()
        opt.step()
    sae.save(tmp_path / "ckpt")
    assert sorted(p.name for p in (tmp_path / "ckpt").iterdir()) == ["cfg.json", "sae.safetensors"]
    record = json.loads((tmp_path / "ckpt" / "cfg.json").read_text())
    assert record["kind"] == kind and record["config"]["seed"] == 3
    loaded = load(tmp_path / "ckpt")
    assert type(loaded) is type(sae) and loaded.cfg == sae.cfg
    for (name, a), (_, b) in zip(sae.state_dict().items(), loaded.state_dict().items(), strict=True):
        assert torch.equal(a, b), name
    sae.eval(), loaded.eval()
    x = data(seed=9)
    assert torch.equal(sae(x)[0], loaded(x)[0])


def test_load_rejects_corrupt_checkpoints(tmp_path):
    sae = create("topk", D_IN, D_SAE, k=4)
    path = sae.save(tmp_path / "c")
    weights = path / "sae.safetensors"
    weights.write_bytes(weights.read_bytes()[:-100])
    with pytest.raises(ValueError, match="corrupt SAE weights"):
        load(path)
    (path / "cfg.json").unlink()
    with pytest.raises(FileNotFoundError, match="cfg.json"):
        load(path)
    sae.save(tmp_path / "d")
    (tmp_path / "d" / "cfg.json").write_text("{not json")
    with pytest.raises(ValueError, match="corrupt SAE config"):
        load(tmp_path / "d")


def test_load_detects_zeroed_bytes_in_the_weights(tmp_path):
    """8 zeroed bytes in the middle of the tensor data keep the file a valid safetensors file of the right
    size: only the recorded sha256 catches them, and the error names the file."""
    sae = create("topk", D_IN, D_SAE, k=4)
    path = sae.save(tmp_path / "c")
    weights = path / "sae.safetensors"
    raw = bytearray(weights.read_bytes())
    middle = len(raw) - 4096
    assert raw[middle : middle + 8] != bytes(8)
    raw[middle : middle + 8] = bytes(8)
    weights.write_bytes(bytes(raw))
    with pytest.raises(ValueError, match=r"corrupt SAE weights .*sae\.safetensors.*sha256"):
        load(path)


@pytest.mark.parametrize(
    ("kind", "hparams", "name"),
    [
        ("topk", {"k": D_SAE + 1}, "k"),
        ("topk", {"k": 0}, "k"),
        ("batchtopk", {"k": 10_000}, "k"),
        ("relu", {"l1_coefficient": -1.0}, "l1_coefficient"),
        ("gated", {"l1_coefficient": float("nan")}, "l1_coefficient"),
        ("jumprelu", {"bandwidth": 0.0}, "bandwidth"),
        ("sparsemax_attention", {"freq_mask": 1.5}, "freq_mask"),
        ("sparsemax_attention", {"impl": "sorted"}, "impl"),
        ("relu", {"decode": "maybe"}, "decode"),
        ("relu", {"l2_coefficient": 1.0}, "l2_coefficient"),
    ],
)
def test_bad_hyperparameters_name_the_parameter(kind, hparams, name):
    with pytest.raises(ValueError, match=name):
        create(kind, D_IN, D_SAE, **hparams)


def test_bad_kind_and_sizes():
    with pytest.raises(ValueError, match="kind='nope'"):
        create("nope", D_IN, D_SAE)
    with pytest.raises(ValueError, match="d_sae"):
        create("relu", D_IN, 0)
    with pytest.raises(ValueError, match="d_in"):
        create("relu", -3, D_SAE)


@pytest.mark.parametrize("kind", KINDS)
def test_input_width_mismatch_names_d_in(kind):
    sae = create(kind, D_IN, D_SAE, **small_hparams(kind))
    with pytest.raises(ValueError, match="d_in=16"):
        sae.encode(torch.randn(5, D_IN + 1))
    with pytest.raises(ValueError, match="d_in=16"):
        sae.loss(torch.randn(5, D_IN - 1))


@pytest.mark.parametrize(
    "kind, hp",
    [
        ("sparsemax_attention", {}),
        ("mlp_sparsemax", {}),
        ("attention_relu", {}),
        ("topk", {"k": 4, "input_norm": "token"}),
        ("relu", {"input_norm": "token"}),
    ],
)
def test_per_token_normalised_kinds_need_the_input_context(kind, hp):
    sae = create(kind, D_IN, D_SAE, **hp)
    assert sae.needs_context
    with pytest.raises(ValueError, match="input_context"):
        sae.decode(sae.encode(data()))
    x = data()
    assert torch.allclose(sae.decode(sae.encode(x), sae.input_context(x)), sae(x)[0])


# ----- training on planted features -------------------------------------------------------------
TRAIN_HPARAMS = {
    "topk": {"k": 4},
    "batchtopk": {"k": 4},
    "relu": {"l1_coefficient": 1e-3},
}


@pytest.mark.parametrize("kind", KINDS)
def test_trains_to_good_explained_variance(kind):
    """400 steps on 64 planted features in 32 dimensions (3 active per token): every kind explains
    most of the variance (the untrained models explain at most half)."""
    torch.set_num_threads(2)
    planted = PlantedFeatures(d_in=32, n_features=64, mean_active=3, noise=0.01)
    x_test = next(planted.batches(2048, seed=99))
    sae = create(kind, 32, 512, dead_window=2000, **TRAIN_HPARAMS.get(kind, {}))
    with torch.no_grad():
        before = ev(x_test, sae.eval()(x_test)[0])
    with tempfile.TemporaryDirectory() as run_dir:
        train(sae, planted.batches(256), TrainConfig(steps=400, lr=1e-2, warmup_steps=20, progress=False), run_dir)
    with torch.no_grad():
        x_hat, acts = sae.eval()(x_test)
    after = ev(x_test, x_hat)
    assert before < 0.5 and after > 0.85, (before, after)
    l0 = (acts != 0).sum(-1).double().mean()
    if kind in ("topk", "batchtopk"):
        assert 2 <= l0 <= 5
    if kind in ("sparsemax_attention", "mlp_sparsemax"):
        assert l0 < 40  # sparse support, chosen per token


# ----- official sparsemax attention --------------------------------------------------------------
def official_transcription(x, concepts, w_k, w_v, latent_freq, freq_threshold=0.1):
    """A plain, slow transcription of the official forward (official_code.md section 2), in float64:
    K = C W_k, z = x_n K^T, frequency mask, sort-based sparsemax, f = z 1[p > 0], V = C W_v,
    x_hat = ||x|| f V, loss = 10 mean((x_hat - x)^2 / ||x||)."""
    norm = x.norm(dim=-1, keepdim=True)
    x_n = x / norm
    z = x_n @ (concepts @ w_k).t()
    z = z * (1 - (latent_freq > freq_threshold).to(z.dtype))
    zs, _ = torch.sort(z, dim=-1, descending=True)
    ks = torch.arange(1, z.shape[-1] + 1, dtype=z.dtype)
    cums = zs.cumsum(-1)
    bound = (1 + ks * zs > cums).to(z.dtype)
    k_star = (ks * bound).max(dim=-1, keepdim=True).values
    tau = ((zs * bound).sum(-1, keepdim=True) - 1) / k_star
    p = torch.clamp(z - tau, min=0)
    f = z * (p > 0).to(z.dtype)
    x_hat = norm * (f @ (concepts @ w_v))
    loss = 10 * ((x_hat - x).pow(2) / norm).mean()
    return f, x_hat, loss


@pytest.mark.parametrize("impl", ["fast", "official"])
@pytest.mark.parametrize("decode", ["sparse", "dense"])
def test_sparsemax_attention_equals_official_transcription(impl, decode):
    sae = create("sparsemax_attention", D_IN, 256, seed=1, impl=impl, decode=decode)
    with torch.no_grad():
        sae.W_k.mul_(8)  # sharper scores: a support of a few latents, as after training
        sae.latent_freq[:40] = torch.linspace(0, 0.3, 40, dtype=torch.float64)  # some latents masked
    x = data(64, seed=4)
    f, x_hat, loss = official_transcription(
        x.double(), sae.concepts.double(), sae.W_k.double(), sae.W_v.double(), sae.latent_freq
    )
    assert (f != 0).sum(-1).float().mean() < 60
    assert torch.allclose(sae.encode(x).double(), f, atol=1e-5)
    ours_x_hat, _ = sae(x)
    assert torch.allclose(ours_x_hat.double(), x_hat, atol=1e-4)
    sae.eval()
    ours_loss, _ = sae.loss(x)
    assert math.isclose(ours_loss.item(), loss.item(), rel_tol=1e-5)


def test_sparsemax_attention_gradients_match_official_order():
    x = data(64, seed=5)
    grads = {}
    for impl, decode in [("official", "dense"), ("fast", "dense"), ("fast", "sparse")]:
        sae = create("sparsemax_attention", D_IN, 256, seed=2, impl=impl, decode=decode).eval()
        with torch.no_grad():
            sae.W_k.mul_(8)
        sae.loss(x)[0].backward()
        grads[impl, decode] = [p.grad.clone() for p in sae.parameters()]
    ref = grads["official", "dense"]
    for key, g in grads.items():
        for a, b in zip(ref, g, strict=True):
            assert torch.allclose(a, b, atol=1e-6, rtol=1e-4), key


def test_official_init_and_frequency_mask_dynamics():
    sae = create("sparsemax_attention", D_IN, 256, seed=0)
    assert sae.concepts.abs().max() <= math.sqrt(6 / 256)
    assert sae.W_k.abs().max() <= math.sqrt(6 / D_IN) and sae.W_v.abs().max() <= math.sqrt(6 / D_IN)
    assert sae.concepts.abs().max() > 0.9 * math.sqrt(6 / 256)
    rates = []
    for step in range(3):
        x = data(50, seed=step)
        acts = sae.encode(x)
        rates.append((acts > 0).double().mean(0))
        sae.loss(x)  # training mode: updates the cumulative mean
    expected = sum(rates) / 3
    assert torch.allclose(sae.latent_freq, expected, atol=1e-12)
    assert int(sae.freq_calls) == 3
    frozen = sae.latent_freq.clone()
    sae.eval()
    sae.loss(data(50, seed=7))
    assert torch.equal(sae.latent_freq, frozen)  # eval mode never updates the mask
    with torch.no_grad():
        sae.latent_freq[:10] = 0.5
    assert torch.count_nonzero(sae.encode(data(50))[:, :10]) == 0
    off = create("sparsemax_attention", D_IN, 256, seed=0, freq_mask=None)
    with torch.no_grad():
        off.latent_freq[:10] = 0.5
    assert torch.count_nonzero(off.encode(data(50))[:, :10]) > 0


SPARSE_CASES = {
    "topk": {"k": 4},
    "batchtopk": {"k": 4},
    "sparsemax_attention": {},
    "mlp_sparsemax": {},
    "sparsemax_attention_paper": {},
    # the ReLU family's sparse training path; JumpReLU with a wide window so that the straight-through
    # estimator's entries below the threshold (no value, a threshold gradient) are exercised too
    "relu": {"l1_coefficient": 0.3},
    "jumprelu": {"l0_coefficient": 0.1, "bandwidth": 0.3, "init_threshold": 0.4},
    "gated": {"l1_coefficient": 0.3},
    "attention_relu": {"l1_coefficient": 0.3},
    "relu-token": {"input_norm": "token"},
    "jumprelu-none": {"input_norm": "none", "bandwidth": 0.5},
}


@pytest.mark.parametrize("case", list(SPARSE_CASES))
def test_sparse_and_dense_paths_agree(case):
    """Loss, every logged part and every gradient within 1e-5 (relative) between the sparse training path
    (sparse backward, embedding_bag decode) and the dense one."""
    kind = case.split("-")[0]
    x = data(80, seed=6) * 3
    results = {}
    for decode in ("sparse", "dense"):
        sae = create(kind, D_IN, 256, seed=4, decode=decode, **SPARSE_CASES[case])
        sae.fit_to_data(x)
        with torch.no_grad():
            for name in ("W_k", "W_q"):
                if hasattr(sae, name):
                    getattr(sae, name).mul_(8)
            if hasattr(sae, "b_enc") and kind in ("relu", "gated"):
                sae.b_enc.sub_(0.5)  # fewer active latents, as after training
        loss, parts = sae.loss(x)
        loss.backward()
        results[decode] = (loss.detach(), parts, {n: p.grad for n, p in sae.named_parameters()})
    (ls, ps, gs), (ld, pd, gd) = results["sparse"], results["dense"]
    assert torch.allclose(ls, ld, rtol=1e-5), (ls, ld)
    assert ps.keys() == pd.keys() and ps["l0"] == pd["l0"]
    for key in ps:
        assert ps[key] == pytest.approx(pd[key], rel=1e-5, abs=1e-6), key
    if kind == "jumprelu":
        assert ps["window_fraction"] > 0 and gs["threshold"].abs().sum() > 0
    for name in gs:
        a, b = gs[name], gd[name]
        assert (a is None and b is None) or torch.allclose(a, b, atol=1e-5 * float(b.abs().max()) + 1e-7, rtol=1e-5), (
            name
        )


def test_paper_variant_decodes_with_sparsemax_weights():
    sae = create("sparsemax_attention_paper", D_IN, 64)
    acts = sae.encode(data())
    assert torch.allclose(acts.sum(-1), torch.ones(acts.shape[0]), atol=1e-5) and (acts >= 0).all()


def test_mlp_sparsemax_starts_as_the_attention_model():
    x = data(seed=8)
    a = create("sparsemax_attention", D_IN, 128, seed=5)
    b = create("mlp_sparsemax", D_IN, 128, seed=5)
    assert torch.allclose(a(x)[0], b(x)[0], atol=1e-5)


# ----- baselines ----------------------------------------------------------------------------------
def test_topk_and_batchtopk_sparsity():
    x = data(128, seed=1)
    topk = create("topk", D_IN, D_SAE, k=5)
    assert ((topk.encode(x) != 0).sum(-1) <= 5).all()
    btk = create("batchtopk", D_IN, D_SAE, k=5)
    acts = btk.encode(x)
    assert int((acts != 0).sum()) == 5 * 128  # k per token on average, varying per token
    assert (acts != 0).sum(-1).max() > 5 or (acts != 0).sum(-1).min() < 5
    btk.loss(x)
    assert int(btk.threshold_updates) == 1 and float(btk.threshold) > 0
    btk.eval()
    eval_acts = btk.encode(x)
    pre = btk.pre_activation(x)
    assert torch.equal(eval_acts != 0, pre > btk.threshold.float())


def test_relu_penalty_weights_by_decoder_norm():
    sae = create("relu", D_IN, D_SAE, l1_coefficient=0.5)
    x = data()
    loss, parts = sae.loss(x)
    acts = sae.encode(x)
    expected_l1 = (acts * sae.W_dec.norm(dim=1)).sum(-1).mean().item()
    assert math.isclose(parts["l1"], expected_l1, rel_tol=1e-5)
    assert math.isclose(parts["loss"], parts["mse"] + 0.5 * expected_l1, rel_tol=1e-5)


def test_unit_norm_decoder_constraints():
    sae = create("topk", D_IN, D_SAE, k=4)
    sae.loss(data())[0].backward()
    sae.constrain_grads()
    parallel = (sae.W_dec.grad * sae.W_dec).sum(-1)
    assert parallel.abs().max() < 1e-6
    with torch.no_grad():
        sae.W_dec.mul_(3)
    sae.constrain_weights()
    assert torch.allclose(sae.W_dec.norm(dim=1), torch.ones(D_SAE), atol=1e-6)


def test_jumprelu_straight_through_gradients():
    z = torch.tensor([[0.1, 0.5, 0.5005, 0.9]], dtype=torch.float64, requires_grad=True)
    theta = torch.tensor([0.5, 0.5, 0.5, 0.5], dtype=torch.float64, requires_grad=True)
    eps = 0.01
    y = JumpReLUFunction.apply(z, theta, eps)
    assert torch.equal(y, torch.tensor([[0.0, 0.0, 0.5005, 0.9]], dtype=torch.float64))
    y.sum().backward()
    assert torch.equal(z.grad, torch.tensor([[0.0, 0.0, 1.0, 1.0]], dtype=torch.float64))
    # d/dtheta = -(theta/eps) K((z - theta)/eps): nonzero only for |z - theta| < eps/2
    assert torch.allclose(theta.grad, torch.tensor([0.0, -50.0, -50.0, 0.0], dtype=torch.float64))
    theta.grad = None
    StepFunction.apply(z, theta, eps).sum().backward()
    assert torch.allclose(theta.grad, torch.tensor([0.0, -100.0, -100.0, 0.0], dtype=torch.float64))


def test_gated_auxiliary_term_does_not_train_the_decoder():
    sae = create("gated", D_IN, D_SAE, l1_coefficient=0.0)
    x = data()
    pi_gate, _ = sae.gate_and_magnitude(x)
    aux = (x - (torch.relu(pi_gate) @ sae.W_dec.detach() + sae.b_dec.detach())).pow(2).sum(-1).mean()
    loss, parts = sae.loss(x)
    assert math.isclose(parts["aux_mse"], aux.item(), rel_tol=1e-6)
    aux.backward()
    assert sae.W_dec.grad is None  # b_dec still learns from it, through the encoder input x - b_dec
    assert sae.W_enc.grad is not None and sae.W_enc.grad.abs().sum() > 0


@pytest.mark.parametrize("seed", range(4))
def test_batch_top_entries_equal_the_flat_selection(seed):
    from repro.sae.topk import batch_top_entries

    g = torch.Generator().manual_seed(seed)
    pre = torch.randn(50, 300, generator=g)
    pre[seed] += 5.0  # one row holds many of the batch's largest entries: far beyond its candidate width
    pre[-1] = -1.0  # a row with no positive entry
    n_keep = 3 * 50
    code = batch_top_entries(pre, n_keep)
    ours = list(zip(code.rows.tolist(), code.cols.tolist(), strict=True))
    assert ours == sorted(ours)  # token-major, as the ragged kernels need
    assert torch.equal(code.offsets, torch.cumsum(code.counts, 0) - code.counts)
    flat = pre.clamp_min(0).flatten()
    top = flat.topk(n_keep).indices
    top = top[flat[top] > 0]
    assert ours == sorted((int(i) // 300, int(i) % 300) for i in top)
    assert int(code.counts[seed]) > 2 * 3  # more than its row's candidate width
    few = batch_top_entries(torch.tensor([[0.5, -1.0], [-2.0, 0.0]]), 3)  # fewer positives than n_keep
    assert list(zip(few.rows.tolist(), few.cols.tolist(), strict=True)) == [(0, 0)]


@pytest.mark.parametrize("masked", [False, True])
def test_gathered_scores_gradcheck(masked):
    from repro.sae.sparse import embedding_bag_decode, gathered_scores

    g = torch.Generator().manual_seed(0)
    q = torch.randn(6, 5, dtype=torch.float64, generator=g, requires_grad=True)
    weight = torch.randn(9, 5, dtype=torch.float64, generator=g, requires_grad=True)
    idx = torch.stack([torch.randperm(9, generator=g)[:4] for _ in range(6)])
    mask = (torch.rand(6, 4, generator=g) > 0.3) if masked else None

    def scores(q, weight):
        with torch.no_grad():
            values = (q[:, None, :] * weight[idx]).sum(-1)
        return gathered_scores(q, weight, idx, values, mask)

    assert torch.autograd.gradcheck(scores, (q, weight))
    decode = lambda v, w: embedding_bag_decode(v, idx, w, mask)  # noqa: E731
    values = torch.randn(6, 4, dtype=torch.float64, generator=g, requires_grad=True)
    assert torch.autograd.gradcheck(decode, (values, weight))
