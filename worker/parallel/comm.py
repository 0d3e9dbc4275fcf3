"""The collectives of Ulysses sequence parallelism.

Between the attention calls every rank holds a slice of the image tokens with all heads; attention itself
needs the whole sequence, so an all-to-all trades "my tokens, all heads" for "all tokens, my heads" and
back. Tensors are [B, H, L, D] (batch, heads, sequence, head dim), as the attention entry point takes them.
Sequence order after a gather is rank-major: the tokens of rank 0, then those of rank 1, ...
"""

from __future__ import annotations

import torch
import torch.distributed as dist


def scatter_heads_gather_sequence(x: torch.Tensor, group: dist.ProcessGroup | None = None) -> torch.Tensor:
    """[B, H, n, D] (this rank's n tokens, all heads) -> [B, H/sp, sp*n, D] (all tokens, this rank's heads)."""
    world = dist.get_world_size(group)
    batch, heads, tokens, head_dim = x.shape
    # [sp, B, H/sp, n, D]: block r holds the heads rank r will own
    send = x.reshape(batch, world, heads // world, tokens, head_dim).transpose(0, 1).contiguous()
    received = torch.empty_like(send)
    dist.all_to_all_single(received, send, group=group)
    # received[r] = rank r's tokens for my heads
    return received.permute(1, 2, 0, 3, 4).reshape(batch, heads // world, world * tokens, head_dim)


def gather_heads_scatter_sequence(x: torch.Tensor, group: dist.ProcessGroup | None = None) -> torch.Tensor:
    """Inverse of `scatter_heads_gather_sequence`: [B, H/sp, sp*n, D] -> [B, H, n, D]."""
    world = dist.get_world_size(group)
    batch, local_heads, length, head_dim = x.shape
    tokens = length // world
    # [sp, B, H/sp, n, D]: block r holds the outputs of rank r's tokens
    send = x.reshape(batch, local_heads, world, tokens, head_dim).permute(2, 0, 1, 3, 4).contiguous()
    received = torch.empty_like(send)
    dist.all_to_all_single(received, send, group=group)
    # received[r] = my tokens under rank r's heads
    return received.transpose(0, 1).reshape(batch, world * local_heads, tokens, head_dim)


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
    x = x.contiguous()
    parts = [torch.empty_like(x) for _ in range(dist.get_world_size(group))]
    dist.all_gather(parts, x, group=group)
    return torch.cat(parts, dim=dim)
