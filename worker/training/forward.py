"""The chunk-causal (AR) training forward of the WorldPlay transformer, with activation checkpointing per
double block when `model.gradient_checkpointing` is set (the bidirectional forward is `model.forward_bi`,
which checkpoints the same way).

The model's own AR entry points (`forward_context` + `forward_chunk`) serve inference, where the context
is one clean set of latents. Training (the official `torch_causal` mode) runs a whole window in one pass:
text keys are visible to every image query, and latent chunk i attends to chunks 0..i (bidirectionally
inside itself). The text stream runs separately at text timestep 0 (`forward_text`), exactly as at
inference, so the per-layer text K/V are shared. With a window of two chunks the last chunk's output
equals `forward_context(first chunk)` + `forward_chunk(last chunk)` (tested).

The blocks' pieces (`image_qkv`, `finish_image`, ...) are the model's own; only the attention pattern and
the checkpointing live here. Caches are never mutated inside a checkpointed region (gotcha 7).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch.utils.checkpoint import checkpoint

from worker.models.transformer import KVCache, WorldPlayTransformer, from_heads_first, to_heads_first


def chunk_causal_mask(num_frames: int, tokens_per_frame: int, chunk_latents: int, text_len: int, device) -> torch.Tensor:
    """Bool [L_img, text_len + L_img]: every text key, and image keys of the query's chunk or earlier ones."""
    chunk_of_token = (torch.arange(num_frames, device=device) // chunk_latents).repeat_interleave(tokens_per_frame)
    image = chunk_of_token[:, None] >= chunk_of_token[None, :]
    text = torch.ones(image.shape[0], text_len, dtype=torch.bool, device=device)
    return torch.cat([text, image], dim=1)


def _maybe_checkpoint(function, enabled: bool, *args):
    if enabled and torch.is_grad_enabled():
        return checkpoint(function, *args, use_reentrant=False)
    return function(*args)


def chunk_causal_forward(
    model: WorldPlayTransformer,
    hidden_states: torch.Tensor,
    timestep: torch.Tensor,
    viewmats: torch.Tensor,
    intrinsics: torch.Tensor,
    action: torch.Tensor,
    text_cache: KVCache,
    chunk_latents: int,
) -> torch.Tensor:
    """Velocity for every latent of the window [B, out_channels, T, H, W]; timestep [B, T] per latent."""
    batch, _, frames = hidden_states.shape[:3]
    # 1. image tokens at RoPE time 0..T-1, per-frame modulation, cameras
    img, frame_vec, rope, camera, grid = model.prepare_frames(hidden_states, timestep, viewmats, intrinsics, action, 0)
    tokens_per_frame = img.shape[2]
    text_len = text_cache.text_keys[0].shape[2]
    # 2. mask [2B or 1, 1, L_img, L_text + L_img]; both branches (RoPE rows, then PRoPE rows) share it
    mask = chunk_causal_mask(frames, tokens_per_frame, chunk_latents, text_len, img.device)[None, None]
    if text_cache.text_mask is not None:
        mask = mask & F.pad(text_cache.text_mask, (0, frames * tokens_per_frame), value=True).repeat(2, 1)[:, None, None]

    def block_forward(block, img, text_keys, text_values):
        img_modulation = tuple(m.unsqueeze(2) for m in block.img_mod(frame_vec))
        (query, key, value), (query_p, key_p, value_p) = block.image_qkv(img, img_modulation, rope, camera)
        queries = torch.cat([to_heads_first(query), to_heads_first(query_p)])
        keys = torch.cat([torch.cat([text_keys, text_keys]), torch.cat([to_heads_first(key), to_heads_first(key_p)])], dim=2)
        values = torch.cat([torch.cat([text_values, text_values]), torch.cat([to_heads_first(value), to_heads_first(value_p)])], dim=2)
        attended = F.scaled_dot_product_attention(queries, keys, values, attn_mask=mask)
        attended_img, attended_p = (from_heads_first(part, query.shape) for part in attended.chunk(2))
        return block.finish_image(img, attended_img, attended_p, img_modulation, camera)

    # 3. the double blocks' image halves
    for index, block in enumerate(model.double_blocks):
        img = _maybe_checkpoint(block_forward, model.gradient_checkpointing, block, img, text_cache.text_keys[index], text_cache.text_values[index])
    return model.final_output(img, frame_vec, grid)
