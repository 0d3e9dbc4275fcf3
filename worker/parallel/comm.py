"""The collectives of Ulysses sequence parallelism, differentiable so that training runs through them too.

Between the attention calls every rank holds a slice of the image tokens with all heads; attention itself
needs the whole sequence, so an all-to-all trades "my tokens, all heads" for "all tokens, my heads" and
back. Tensors are [B, H, L, D] (batch, heads, sequence, head dim), as the attention entry point takes them.
Sequence order after a gather is rank-major: the tokens of rank 0, then those of rank 1, ...

Gradients. Every rank of a group computes the same loss from the gathered output, so the backward pass
keeps one convention: the gradient a rank holds of a tensor every rank holds whole is that rank's share,
and the shares sum, over the group, to sp times the true gradient, while the gradient of a sharded tensor
(this rank's tokens, or this rank's heads) is sp times its true gradient. Then an all-to-all's backward is
the inverse all-to-all, a narrow's backward is zero outside the narrowed part, and a gather's backward
sums the group's gradients and keeps this rank's part (a reduce-scatter); the parameter gradients, averaged
over the group, are exactly one process's. Training averages them over all ranks anyway (data parallel or
FSDP), so sequence parallelism costs no extra reduction.
"""

from __future__ import annotations

import torch
import torch.distributed as dist


def scatter_heads_gather_sequence(x: torch.Tensor, group: dist.ProcessGroup | None = None) -> torch.Tensor:
    """[B, H, n, D] (this rank's n tokens, all heads) -> [B, H/sp, sp*n, D] (all tokens, this rank's heads)."""
    return _AllToAll.apply(x, _scatter_heads, group)


def gather_heads_scatter_sequence(x: torch.Tensor, group: dist.ProcessGroup | None = None) -> torch.Tensor:
    """Inverse of `scatter_heads_gather_sequence`: [B, H/sp, sp*n, D] -> [B, H, n, D]."""
    return _AllToAll.apply(x, _gather_heads, group)


def narrow_heads(x: torch.Tensor, group: dist.ProcessGroup | None = None) -> torch.Tensor:
    """This rank's heads of a tensor every rank holds whole: [B, H, L, D] -> [B, H/sp, L, D]."""
    world, rank = dist.get_world_size(group), dist.get_rank(group)
    local = x.shape[1] // world
    return x[:, rank * local : (rank + 1) * local]


def gather_heads(x: torch.Tensor, group: dist.ProcessGroup | None = None) -> torch.Tensor:
    """[B, H/sp, L, D] from every rank -> [B, H, L, D] on every rank."""
    return all_gather_cat(x, dim=1, group=group)


def all_gather_cat(x: torch.Tensor, dim: int, group: dist.ProcessGroup | None = None) -> torch.Tensor:
    """Concatenate every rank's `x` (equal shapes) along `dim`, in rank order."""
    return _AllGatherCat.apply(x, dim, group)


def _scatter_heads(x: torch.Tensor, group: dist.ProcessGroup | None) -> torch.Tensor:
    world = dist.get_world_size(group)
    batch, heads, tokens, head_dim = x.shape
    # [sp, B, H/sp, n, D]: block r holds the heads rank r will own
    send = x.reshape(batch, world, heads // world, tokens, head_dim).transpose(0, 1).contiguous()
    received = torch.empty_like(send)
    dist.all_to_all_single(received, send, group=group)
    # received[r] = rank r's tokens for my heads
    return received.permute(1, 2, 0, 3, 4).reshape(batch, heads // world, world * tokens, head_dim)


def _gather_heads(x: torch.Tensor, group: dist.ProcessGroup | None) -> torch.Tensor:
    world = dist.get_world_size(group)
    batch, local_heads, length, head_dim = x.shape
    tokens = length // world
    # [sp, B, H/sp, n, D]: block r holds the outputs of rank r's tokens
    send = x.reshape(batch, local_heads, world, tokens, head_dim).permute(2, 0, 1, 3, 4).contiguous()
    received = torch.empty_like(send)
    dist.all_to_all_single(received, send, group=group)
    # received[r] = my tokens under rank r's heads
    return received.transpose(0, 1).reshape(batch, world * local_heads, tokens, head_dim)


_INVERSE = {_scatter_heads: _gather_heads, _gather_heads: _scatter_heads}


class _AllToAll(torch.autograd.Function):
    """One of the two all-to-alls; its backward is the other."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, exchange, group):
        ctx.exchange, ctx.group = exchange, group
        return exchange(x, group)

    @staticmethod
    def backward(ctx, gradient: torch.Tensor):
        return _INVERSE[ctx.exchange](gradient.contiguous(), ctx.group), None, None


class _AllGatherCat(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x: torch.Tensor, dim: int, group):
        ctx.dim, ctx.group = dim, group
        x = x.contiguous()
        parts = [torch.empty_like(x) for _ in range(dist.get_world_size(group))]
        dist.all_gather(parts, x, group=group)
        return torch.cat(parts, dim=dim)

    @staticmethod
    def backward(ctx, gradient: torch.Tensor):
        # a reduce-scatter, as an all-reduce and a narrow: gloo has no reduce-scatter (a copy: autograd's
        # gradient buffer is not ours to reduce in place)
        gradient = gradient.clone(memory_format=torch.contiguous_format)
        dist.all_reduce(gradient, group=ctx.group)
        size = gradient.shape[ctx.dim] // dist.get_world_size(ctx.group)
        return gradient.narrow(ctx.dim, dist.get_rank(ctx.group) * size, size), None, None
