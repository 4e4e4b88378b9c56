"""Sparse kernels shared by the SAE kinds.

A sparse code is a pair ``(values, indices)`` of shape ``(N, k)``: token t uses latents
``indices[t]`` with weights ``values[t]`` (padding entries have value 0). Dense and sparse paths
compute the same numbers; the sparse ones skip the T x d_sae work that a dense code implies.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor


def embedding_bag_decode(values: Tensor, indices: Tensor, weight: Tensor, mask: Tensor | None = None) -> Tensor:
    """``out[t] = sum_j values[t, j] * weight[indices[t, j]]`` over the entries with ``mask[t, j]`` (all
    when ``mask`` is None), with ``F.embedding_bag``: forward and backward touch only those rows."""
    if indices.shape[1] == 0:
        return values.new_zeros(values.shape[0], weight.shape[1])
    if mask is None:
        return F.embedding_bag(indices, weight, per_sample_weights=values, mode="sum")
    code = Ragged.from_padded(indices, mask)
    return F.embedding_bag(code.cols, weight, code.offsets, per_sample_weights=code.take(values), mode="sum")


class Ragged:
    """The entries of a padded (N, w) code selected by a mask, grouped by token: ``cols`` (latent of each
    entry), ``rows`` (its token), ``offsets`` (start of each token's entries) and ``flat`` (positions in
    the flattened padded code)."""

    def __init__(self, rows: Tensor, cols: Tensor, offsets: Tensor, flat: Tensor | None):
        self.rows, self.cols, self.offsets, self.flat = rows, cols, offsets, flat

    @staticmethod
    def from_mask(mask: Tensor) -> Ragged:
        """The entries of a dense (N, M) boolean ``mask``, token by token (``cols`` = latent of each entry)."""
        rows, cols = mask.nonzero(as_tuple=True)  # row-major: grouped by token
        counts = torch.bincount(rows, minlength=mask.shape[0])
        return Ragged(rows, cols, torch.cumsum(counts, 0) - counts, None)

    @property
    def counts(self) -> Tensor:
        """Entries per token (the per-token L0 of a code whose values are all nonzero)."""
        return torch.bincount(self.rows, minlength=len(self.offsets))

    @staticmethod
    def from_padded(indices: Tensor, mask: Tensor | None) -> Ragged:
        n, w = indices.shape
        device = indices.device
        if mask is None:
            counts = torch.full((n,), w, dtype=torch.long, device=device)
            flat = None
            cols = indices.reshape(-1)
        else:
            counts = mask.sum(dim=1)
            flat = mask.reshape(-1).nonzero().squeeze(1)
            cols = indices.reshape(-1)[flat]
        rows = torch.repeat_interleave(torch.arange(n, device=device), counts)
        return Ragged(rows, cols, torch.cumsum(counts, 0) - counts, flat)

    def take(self, padded: Tensor) -> Tensor:
        """The selected entries of a padded (N, w) tensor, in code order (differentiable)."""
        flat = padded.reshape(-1)
        return flat if self.flat is None else flat.index_select(0, self.flat)

    def by_latent(self, n_latents: int) -> tuple[Tensor, Tensor]:
        """``(order, offsets)``: entries sorted by latent (stable) and the start of each latent's group."""
        order = torch.argsort(self.cols, stable=True)
        counts = torch.bincount(self.cols, minlength=n_latents)
        return order, torch.cumsum(counts, 0) - counts


def take(values: Tensor, index: Tensor) -> Tensor:
    """``values[index]`` for a 1-D ``values`` and an index tensor of any shape, as ``index_select``: its backward
    is an ``index_add`` (deterministic on CPU), where advanced indexing's is an accumulating ``index_put``,
    whose CPU kernel sums in a thread-dependent order unless deterministic algorithms are switched on."""
    return values.index_select(0, index.reshape(-1)).view(index.shape)


def dense_to_sparse(acts: Tensor) -> tuple[Tensor, Tensor]:
    """``(values, indices)`` holding every nonzero of each row of ``acts (N, M)``, padded with zeros to
    the largest row count; differentiable in ``values``."""
    width = int((acts != 0).sum(dim=1).max()) if acts.numel() else 0
    indices = torch.topk(acts.detach().abs(), width, dim=1, sorted=False).indices
    return acts.gather(1, indices), indices


def sparse_to_dense(values: Tensor, indices: Tensor, width: int) -> Tensor:
    """The dense ``(N, width)`` matrix with ``values`` added at ``indices`` (differentiable; padding
    entries, value 0, may repeat an index)."""
    return values.new_zeros(values.shape[0], width).scatter_add(1, indices, values)


def decode_matrix(acts: Tensor, weight: Tensor, sparse: bool) -> Tensor:
    """``acts (..., M) @ weight (M, d)``, densely or through :func:`embedding_bag_decode`."""
    flat = acts.reshape(-1, acts.shape[-1])
    if sparse:
        out = embedding_bag_decode(*dense_to_sparse(flat), weight)
    else:
        out = flat @ weight
    return out.reshape(*acts.shape[:-1], weight.shape[1])


class _GatheredScores(torch.autograd.Function):
    """Selected scores ``s[t, j] = <q[t], W[idx[t, j]]>`` (0 where the mask is off) whose values were
    already computed by a dense no-grad product, with a backward that touches only the selected
    entries: ``dq[t] = sum_j g[t, j] W[idx[t, j]]`` and ``dW[i] = sum_{(t, j): idx[t, j] = i} g[t, j] q[t]``,
    both as ``embedding_bag`` sums (the second over the entries grouped by latent)."""

    @staticmethod
    def forward(ctx, q: Tensor, weight: Tensor, indices: Tensor, values: Tensor, mask: Tensor | None) -> Tensor:
        ctx.save_for_backward(q, weight, indices, mask)
        return values.clone() if mask is None else values * mask.to(values.dtype)

    @staticmethod
    def backward(ctx, grad: Tensor):
        q, weight, indices, mask = ctx.saved_tensors
        code = Ragged.from_padded(indices, mask)
        grad_q, grad_w = _sparse_score_grads(q, weight, code, code.take(grad.contiguous()), ctx.needs_input_grad)
        return grad_q, grad_w, None, None, None


def _sparse_score_grads(
    q: Tensor, weight: Tensor, code: Ragged, g: Tensor, needs: tuple[bool, ...]
) -> tuple[Tensor | None, Tensor | None]:
    """Gradients of the scores ``<q[row], weight[col]>`` of the entries of ``code`` given their output
    gradients ``g``: ``dq[t] = sum_e g_e W[col_e]`` and ``dW[i] = sum_e g_e q[row_e]``, as embedding_bag sums."""
    grad_q = grad_w = None
    if needs[0]:
        grad_q = F.embedding_bag(code.cols, weight, code.offsets, per_sample_weights=g, mode="sum")
    if needs[1]:
        order, offsets = code.by_latent(weight.shape[0])
        grad_w = F.embedding_bag(code.rows[order], q, offsets, per_sample_weights=g[order], mode="sum")
    return grad_q, grad_w


class _RaggedScores(torch.autograd.Function):
    """:class:`_GatheredScores` for a ragged code: the scores of the entries ``(rows, cols)`` of ``code``,
    shape (E,), already computed by a dense no-grad product, with a backward touching only those entries."""

    @staticmethod
    def forward(ctx, q: Tensor, weight: Tensor, values: Tensor, code: Ragged) -> Tensor:
        ctx.save_for_backward(q, weight)
        ctx.code = code
        return values.clone()

    @staticmethod
    def backward(ctx, grad: Tensor):
        q, weight = ctx.saved_tensors
        grad_q, grad_w = _sparse_score_grads(q, weight, ctx.code, grad.contiguous(), ctx.needs_input_grad)
        return grad_q, grad_w, None, None


def ragged_scores(q: Tensor, weight: Tensor, code: Ragged, values: Tensor) -> Tensor:
    """Differentiable ``<q[rows_e], weight[cols_e]>`` (E,) for the entries of ``code``; ``values`` are those
    scores, already computed (e.g. gathered from a dense no-grad product)."""
    return _RaggedScores.apply(q, weight, values.detach(), code)


def ragged_decode(values: Tensor, code: Ragged, weight: Tensor) -> Tensor:
    """``out[t] = sum over the entries e of token t of values[e] * weight[cols_e]`` (N, d), with embedding_bag."""
    if code.cols.numel() == 0:
        return values.new_zeros(len(code.offsets), weight.shape[1]) + 0 * values.sum()
    return F.embedding_bag(code.cols, weight, code.offsets, per_sample_weights=values, mode="sum")


def gathered_scores(
    q: Tensor, weight: Tensor, indices: Tensor, values: Tensor | None = None, mask: Tensor | None = None
) -> Tensor:
    """Differentiable ``<q[t], weight[indices[t, j]]>`` for ``q (N, d)``, ``weight (M, d)``,
    ``indices (N, k)``; entries where ``mask (N, k)`` is False are 0 and get no gradient. ``values``
    are the scores if already computed (no second product)."""
    if values is None:
        with torch.no_grad():
            values = torch.einsum("nd,nkd->nk", q, weight[indices])
    return _GatheredScores.apply(q, weight, indices, values.detach(), mask)
