"""Sparse kernels shared by the SAE kinds.

A sparse code is a pair ``(values, indices)`` of shape ``(N, k)``: token t uses latents
``indices[t]`` with weights ``values[t]`` (padding entries have value 0). Dense and sparse paths
compute the same numbers; the sparse ones skip the T x d_sae work that a dense code implies.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor


def embedding_bag_decode(values: Tensor, indices: Tensor, weight: Tensor) -> Tensor:
    """``out[t] = sum_j values[t, j] * weight[indices[t, j]]`` with ``F.embedding_bag`` (forward and
    backward touch only the selected rows)."""
    if indices.shape[1] == 0:
        return values.new_zeros(values.shape[0], weight.shape[1])
    return F.embedding_bag(indices, weight, per_sample_weights=values, mode="sum")


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
    """Selected scores ``s[t, j] = <q[t], W[idx[t, j]]>`` whose values were already computed by a dense
    no-grad product, with a backward that touches only the selected entries:
    ``dq[t] = sum_j g[t, j] W[idx[t, j]]`` (an embedding_bag) and ``dW = G^T q`` with G the sparse
    (N, M) matrix of the upstream gradients."""

    @staticmethod
    def forward(ctx, q: Tensor, weight: Tensor, indices: Tensor, values: Tensor) -> Tensor:
        ctx.save_for_backward(q, weight, indices)
        return values.clone()

    @staticmethod
    def backward(ctx, grad: Tensor):
        q, weight, indices = ctx.saved_tensors
        grad_q = grad_w = None
        if ctx.needs_input_grad[0]:
            grad_q = embedding_bag_decode(grad, indices, weight)
        if ctx.needs_input_grad[1]:
            n, k = indices.shape
            rows = torch.arange(n, device=indices.device).repeat_interleave(k)
            g = torch.sparse_coo_tensor(torch.stack([indices.reshape(-1), rows]), grad.reshape(-1),
                                        (weight.shape[0], n), check_invariants=False).coalesce()
            grad_w = torch.sparse.mm(g, q)
        return grad_q, grad_w, None, None


def gathered_scores(q: Tensor, weight: Tensor, indices: Tensor, values: Tensor | None = None) -> Tensor:
    """Differentiable ``<q[t], weight[indices[t, j]]>`` for ``q (N, d)``, ``weight (M, d)``,
    ``indices (N, k)``. ``values`` are those scores if already computed (no second product)."""
    if values is None:
        with torch.no_grad():
            values = torch.einsum("nd,nkd->nk", q, weight[indices])
    return _GatheredScores.apply(q, weight, indices, values.detach())
