"""Ulysses sequence parallelism around the native transformer, without a parallel copy of its forwards.

The transformer's forwards run unchanged on every rank; three seams are redirected while they run:

- `prepare_frames`: the image tokens [B, T, S, C] (with their RoPE rows) are cut along S, the tokens of one
  latent frame, so every rank keeps all T frames and per-frame modulation and cameras broadcast as before.
  S is padded up to a multiple of sp; padded tokens are masked out as keys and dropped at the end.
- the attention entry point: image q/k/v go through one all-to-all (scatter heads, gather sequence), text
  q/k/v are narrowed to the local heads, attention runs on H/sp heads over the whole sequence, then image
  outputs go back through the inverse all-to-all and text outputs are gathered over heads.
- `final_output`: the image tokens of all ranks are gathered before the final layer and unpatchify.

The text stream (and the autoregressive text K/V) is small and stays whole on every rank. The
autoregressive context K/V is sharded by heads, as in the official code: the all-to-all'd keys of the
context pass [2B, H/sp, sp*n, D] are what the cache keeps. The transformer concatenates the cached context
with the chunk's keys along the sequence and therefore expects [2B, H, n, D]; the head-sharded tensor is
stored under that shape (same number of elements) and viewed back as [2B, H/sp, sp*n, D] inside
attention, so the context is never re-communicated while a chunk is denoised. A cache built by this
wrapper only works with this wrapper and the same sp.

Ranks must run the same calls with the same shapes (collectives pair up in call order).
"""

from __future__ import annotations

import copy
import math
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import torch
import torch.distributed as dist
import torch.nn.functional as F

import worker.models.transformer as transformer_module
from worker.models.attention import attention
from worker.models.transformer import KVCache, PromptEmbeddings, WorldPlayTransformer
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
        positions = torch.arange(self.world, device=device)[:, None] * self.local + torch.arange(self.local, device=device)
        return (positions < self.tokens_per_frame)[:, None, :].expand(self.world, frames, self.local).reshape(-1)


class SequenceParallelTransformer:
    """A `WorldPlayTransformer` split over the ranks of `group` (all of them run the same calls).

    Same forwards and results as the wrapped model; any other attribute (config, device, dtype, ...) is the
    model's. With a group of one rank the calls go straight to the model.
    """

    def __init__(self, model: WorldPlayTransformer, group: dist.ProcessGroup | None = None):
        self.model = model
        self.group = group
        self.world = dist.get_world_size(group) if dist.is_initialized() else 1
        self.rank = dist.get_rank(group) if dist.is_initialized() else 0
        check_sp_degree(model.config.num_heads, self.world)
        # state of the pass in progress (set by `_sharded` and `_prepare_frames`)
        self._phase: str | None = None
        self._suspended = False
        self._shard: TokenShard | None = None
        self._local_tokens = 0
        self._text_len = 0
        self._context_len = 0
        self._context_keys: list[torch.Tensor] = []
        self._context_values: list[torch.Tensor] = []

    def __getattr__(self, name: str):
        return getattr(self.model, name)

    # -- the forwards ---------------------------------------------------------------------------------

    def forward_bi(
        self,
        hidden_states: torch.Tensor,
        timestep: torch.Tensor | float,
        prompt: PromptEmbeddings,
        viewmats: torch.Tensor,
        intrinsics: torch.Tensor,
        action: torch.Tensor,
        text_timestep: torch.Tensor | float | None = None,
    ) -> torch.Tensor:
        with self._sharded("bi"):
            return self.model.forward_bi(hidden_states, timestep, prompt, viewmats, intrinsics, action, text_timestep)

    def forward_text(self, prompt: PromptEmbeddings, text_timestep: torch.Tensor | float = 0.0) -> KVCache:
        # text attends to text only: every rank computes the (short) text stream whole
        return self.model.forward_text(prompt, text_timestep)

    def forward_context(
        self,
        hidden_states: torch.Tensor,
        viewmats: torch.Tensor,
        intrinsics: torch.Tensor,
        action: torch.Tensor,
        cache: KVCache,
        timestep: torch.Tensor | float = 14.0,
    ) -> KVCache:
        if self.world == 1:
            return self.model.forward_context(hidden_states, viewmats, intrinsics, action, cache, timestep)
        self._text_len = cache.text_keys[0].shape[2]
        self._context_keys, self._context_values = [], []
        with self._sharded("context"):
            cache = self.model.forward_context(hidden_states, viewmats, intrinsics, action, cache, timestep)
        keys, values = tuple(self._context_keys), tuple(self._context_values)
        self._context_keys, self._context_values = [], []
        return cache.with_context(keys, values, cache.context_frames)

    def forward_chunk(
        self,
        hidden_states: torch.Tensor,
        timestep: torch.Tensor | float,
        viewmats: torch.Tensor,
        intrinsics: torch.Tensor,
        action: torch.Tensor,
        cache: KVCache,
    ) -> torch.Tensor:
        self._text_len = cache.text_keys[0].shape[2]
        self._context_len = cache.context_keys[0].shape[2] if cache.context_frames else 0
        with self._sharded("chunk"):
            return self.model.forward_chunk(hidden_states, timestep, viewmats, intrinsics, action, cache)

    # -- the redirected seams -------------------------------------------------------------------------

    @contextmanager
    def _sharded(self, phase: str) -> Iterator[None]:
        if self.world == 1:
            yield
            return
        model = self.model
        # instance attributes shadow the class's methods for this model only, and only during the call
        model.prepare_frames = self._prepare_frames
        model.final_output = self._final_output
        model.embed_prompt = self._embed_prompt
        transformer_module.attention = self._attention
        self._phase = phase
        try:
            yield
        finally:
            self._phase = None
            transformer_module.attention = attention
            for name in ("prepare_frames", "final_output", "embed_prompt"):
                delattr(model, name)

    def _prepare_frames(self, hidden_states, timestep, viewmats, intrinsics, action, time_offset: int):
        img, frame_vec, rope, camera, grid = type(self.model).prepare_frames(
            self.model, hidden_states, timestep, viewmats, intrinsics, action, time_offset
        )
        self._shard = shard = TokenShard(img.shape[2], self.world, self.rank)
        img = shard.take(img, dim=2)
        rope = copy.copy(rope)
        # RoPE rows are [T, S, 1, D]; padded rows are zero, which leaves padded tokens at zero too
        rope.cos, rope.sin = shard.take(rope.cos, dim=1), shard.take(rope.sin, dim=1)
        self._local_tokens = img.shape[1] * img.shape[2]
        return img, frame_vec, rope, camera, grid

    def _final_output(self, img: torch.Tensor, frame_vec: torch.Tensor, grid: tuple[int, int, int]) -> torch.Tensor:
        img = all_gather_cat(img, dim=2, group=self.group)[:, :, : self._shard.tokens_per_frame]
        return type(self.model).final_output(self.model, img, frame_vec, grid)

    def _embed_prompt(self, prompt: PromptEmbeddings, text_timestep: torch.Tensor):
        # the text refiner's attention is text-only and runs whole on every rank
        self._suspended = True
        try:
            return type(self.model).embed_prompt(self.model, prompt, text_timestep)
        finally:
            self._suspended = False

    def _attention(self, query, key, value, key_mask=None, backend="auto"):
        """The attention entry point seen by the transformer while a sharded pass runs.

        Sequence layouts of the calls (n = this rank's image tokens, first in the query):
        bi: query [image n | text], keys [image n | text];  PRoPE branch: query [image n], same keys.
        context: query [image n], keys [text | image n].   chunk: query [image n], keys [text | context | image n].
        """
        if self._suspended:
            return attention(query, key, value, key_mask, backend)
        n = self._local_tokens
        if self._phase == "bi":
            key_layout = [("image", n), ("text", key.shape[2] - n)]
        elif self._phase == "context":
            key_layout = [("text", self._text_len), ("image", n)]
        else:
            key_layout = [("text", self._text_len), ("context", self._context_len), ("image", n)]
        return self._ulysses(query, key, value, key_mask, backend, [part for part in key_layout if part[1]])

    def _ulysses(self, query, key, value, key_mask, backend, key_layout: list[tuple[str, int]]) -> torch.Tensor:
        group, shard, n = self.group, self._shard, self._local_tokens
        batch, heads, _, head_dim = query.shape
        frames = n // shard.local
        # 1. image q/k/v in one all-to-all: [3B, H, n, D] -> [3B, H/sp, sp*n, D]
        image_start = _offset(key_layout, "image")
        stacked = torch.cat([query[:, :, :n], key[:, :, image_start : image_start + n], value[:, :, image_start : image_start + n]])
        image_query, image_key, image_value = scatter_heads_gather_sequence(stacked, group).chunk(3)
        if self._phase == "context":
            # stored head-sharded under the full-head shape the transformer concatenates (module docstring)
            self._context_keys.append(image_key.reshape(batch, heads, n, head_dim))
            self._context_values.append(image_value.reshape(batch, heads, n, head_dim))
        # 2. the keys in the transformer's order, each part on this rank's heads, with its key mask
        keys, values, masks = [], [], []
        start = 0
        for kind, length in key_layout:
            end = start + length
            if kind == "image":
                keys.append(image_key)
                values.append(image_value)
                masks.append(shard.gathered_valid(frames, query.device))
            elif kind == "context":
                local_heads = heads // self.world
                keys.append(key[:, :, start:end].reshape(batch, local_heads, self.world * length, head_dim))
                values.append(value[:, :, start:end].reshape(batch, local_heads, self.world * length, head_dim))
                masks.append(shard.gathered_valid(length // shard.local, query.device))
            else:
                keys.append(narrow_heads(key[:, :, start:end], group))
                values.append(narrow_heads(value[:, :, start:end], group))
                masks.append(None if key_mask is None else key_mask[:, start:end])
            start = end
        mask = _join_masks(masks, [part.shape[2] for part in keys], batch, query.device)
        # 3. queries: gathered image rows, then (bi) the text rows on this rank's heads
        text_queries = query.shape[2] - n
        queries = image_query if not text_queries else torch.cat([image_query, narrow_heads(query[:, :, n:], group)], dim=2)
        attended = attention(queries, torch.cat(keys, dim=2), torch.cat(values, dim=2), mask, backend)
        # 4. back to this rank's image tokens on all heads; text rows gathered over heads
        image_len = image_query.shape[2]
        out = gather_heads_scatter_sequence(attended[:, :, :image_len].contiguous(), group)
        if text_queries:
            out = torch.cat([out, gather_heads(attended[:, :, image_len:], group)], dim=2)
        return out


def _offset(layout: list[tuple[str, int]], kind: str) -> int:
    offset = 0
    for name, length in layout:
        if name == kind:
            return offset
        offset += length
    raise AssertionError(f"no {kind} part in {layout}")


def _join_masks(masks: list[torch.Tensor | None], lengths: list[int], batch: int, device: torch.device):
    """One key mask [B, L] from per-part masks ([B, l], [l] or None meaning all valid); None if all valid."""
    if all(mask is None for mask in masks):
        return None
    rows = []
    for mask, length in zip(masks, lengths):
        if mask is None:
            mask = torch.ones(length, dtype=torch.bool, device=device)
        rows.append(mask.expand(batch, length) if mask.ndim == 1 else mask)
    return torch.cat(rows, dim=1)
