"""Ulysses sequence parallelism for the native transformer: an attention processor it is given.

`model.set_attention_processor(UlyssesAttention(group, backend))` makes every rank of `group` compute 1/sp
of the image tokens of each pass; the model's attention patterns call the processor's hooks:

- `shard_frames`: the image tokens [B, T, S, C] (with their RoPE rows) are cut along S, the tokens of one
  latent frame, so every rank keeps all T frames and per-frame modulation and cameras broadcast as before.
  S is padded up to a multiple of sp; padded tokens are masked out as keys (`image_key_mask`) and dropped
  by `gather_frames`, which gathers the tokens of all ranks before the final layer and unpatchify.
- around every attention call: image q/k/v go through one all-to-all (scatter heads, gather sequence),
  text q/k/v are narrowed to the local heads, attention runs on H/sp heads over the whole sequence, then
  image outputs go back through the inverse all-to-all and text outputs are gathered over heads.

The text stream (and the autoregressive text K/V) is small and stays whole on every rank. The
autoregressive context K/V are cached in the attention layout, sharded by heads as in the official code:
[2B, H/sp, sp*n, D], rank-major over the sequence, so the context is never re-communicated while a chunk is
denoised. A cache built under this processor only works with it and the same sp.

Ranks must run the same calls with the same shapes (collectives pair up in call order).
"""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass

import torch
import torch.distributed as dist
import torch.nn.functional as F

from worker.models.attention import AttentionProcessor
from worker.parallel.comm import (
    all_gather_cat,
    gather_heads,
    gather_heads_scatter_sequence,
    narrow_heads,
    scatter_heads_gather_sequence,
)


class SequenceParallelError(ValueError):
    """A sequence-parallel degree the model cannot be split into."""


def valid_sp_degrees(num_heads: int) -> list[int]:
    """Degrees that split the heads evenly (16 heads: 1, 2, 4, 8, 16)."""
    return [degree for degree in range(1, num_heads + 1) if num_heads % degree == 0]


def check_sp_degree(num_heads: int, sp: int) -> None:
    if sp < 1 or num_heads % sp:
        raise SequenceParallelError(
            f"sequence parallel over {sp} GPUs needs the {num_heads} attention heads to split evenly; "
            f"use one of {valid_sp_degrees(num_heads)}"
        )


@dataclass(frozen=True)
class TokenShard:
    """Which tokens of every latent frame this rank holds: [rank*local, (rank+1)*local) of the padded frame."""

    tokens_per_frame: int
    world: int
    rank: int

    @property
    def local(self) -> int:
        return math.ceil(self.tokens_per_frame / self.world)

    @property
    def padding(self) -> int:
        return self.local * self.world - self.tokens_per_frame

    def take(self, x: torch.Tensor, dim: int) -> torch.Tensor:
        """This rank's tokens of `x` along its per-frame token dim (zero-padded up to world*local first)."""
        if self.padding:
            x = F.pad(x, [0, 0] * (x.ndim - 1 - dim) + [0, self.padding])
        return x.narrow(dim, self.rank * self.local, self.local)

    def gathered_valid(self, frames: int, device: torch.device) -> torch.Tensor | None:
        """Mask [world*frames*local] of real (not padding) tokens in a rank-major gathered sequence, or None
        when nothing is padded."""
        if not self.padding:
            return None
        positions = torch.arange(self.world, device=device)[:, None] * self.local + torch.arange(
            self.local, device=device
        )
        return (positions < self.tokens_per_frame)[:, None, :].expand(self.world, frames, self.local).reshape(-1)


class UlyssesAttention(AttentionProcessor):
    """The attention processor of a rank in a sequence-parallel group (`group` None: the default group).

    `shard_frames` returns a copy bound to the pass's token split; the other hooks need that split.
    """

    def __init__(self, group: dist.ProcessGroup | None = None, backend: str = "auto"):
        super().__init__(backend)
        self.group = group
        self.world_size = dist.get_world_size(group)
        self.rank = dist.get_rank(group)
        self.shard: TokenShard | None = None

    def check_heads(self, num_heads: int) -> None:
        check_sp_degree(num_heads, self.world_size)

    def shard_frames(self, img: torch.Tensor, rope) -> tuple[torch.Tensor, object, UlyssesAttention]:
        shard = TokenShard(img.shape[2], self.world_size, self.rank)
        rope = copy.copy(rope)
        # RoPE rows are [T, S, 1, D]; padded rows are zero, which leaves padded tokens at zero too
        rope.cos, rope.sin = shard.take(rope.cos, dim=1), shard.take(rope.sin, dim=1)
        bound = copy.copy(self)
        bound.shard = shard
        return shard.take(img, dim=2), rope, bound

    def gather_frames(self, img: torch.Tensor) -> torch.Tensor:
        return all_gather_cat(img, dim=2, group=self.group)[:, :, : self.shard.tokens_per_frame]

    def image_to_attention(self, *tensors: torch.Tensor) -> tuple[torch.Tensor, ...]:
        # one all-to-all for all of them: [k*B, H, n, D] -> [k*B, H/sp, sp*n, D]
        return scatter_heads_gather_sequence(torch.cat(tensors), self.group).chunk(len(tensors))

    def image_from_attention(self, attended: torch.Tensor) -> torch.Tensor:
        return gather_heads_scatter_sequence(attended.contiguous(), self.group)

    def text_to_attention(self, tensor: torch.Tensor) -> torch.Tensor:
        return narrow_heads(tensor, self.group)

    def text_from_attention(self, attended: torch.Tensor) -> torch.Tensor:
        return gather_heads(attended, self.group)

    def image_key_mask(self, length: int, device: torch.device) -> torch.Tensor | None:
        # `length` gathered keys hold length / (sp*local) frames, rank-major
        return self.shard.gathered_valid(length // (self.world_size * self.shard.local), device)
