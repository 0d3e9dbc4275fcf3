"""KV-cache semantics and general-case behaviour of the transformer beyond the golden shapes."""

from __future__ import annotations

import math
from dataclasses import replace

import pytest
import torch
import torch.nn.functional as F

from golden_util import load_io
from transformer_util import golden_prompt, load_golden_model
from worker.models.tiny import TINY_TRANSFORMER_CONFIG
from worker.models.transformer import (
    CameraProjection,
    PromptEmbeddings,
    WorldPlayTransformer,
    to_heads_first,
)

ATOL = 1e-4


@pytest.fixture(scope="module")
def model(golden_transformer_state):
    return load_golden_model(golden_transformer_state)


def random_inputs(frames: int, height: int, width: int, batch: int = 1, seed: int = 0, channels: int = 4):
    generator = torch.Generator().manual_seed(seed)
    x = torch.randn(batch, 2 * channels + 1, frames, height, width, generator=generator)
    yaw = torch.rand(batch, frames, generator=generator) - 0.5
    viewmats = torch.eye(4).repeat(batch, frames, 1, 1)
    viewmats[..., 0, 0], viewmats[..., 0, 2] = torch.cos(yaw), -torch.sin(yaw)
    viewmats[..., 2, 0], viewmats[..., 2, 2] = torch.sin(yaw), torch.cos(yaw)
    viewmats[..., :3, 3] = torch.randn(batch, frames, 3, generator=generator) * 0.3
    intrinsics = torch.tensor([[0.505, 0, 0.5], [0, 0.898, 0.5], [0, 0, 1.0]]).repeat(batch, frames, 1, 1)
    action = torch.randint(0, 81, (batch, frames), generator=generator)
    return x, viewmats, intrinsics, action


def random_prompt(valid_llm: list[int], valid_byt5: list[int], seed: int = 1) -> PromptEmbeddings:
    generator = torch.Generator().manual_seed(seed)
    batch = len(valid_llm)
    llm_mask = torch.arange(10)[None] < torch.tensor(valid_llm)[:, None]
    byt5_mask = torch.arange(6)[None] < torch.tensor(valid_byt5)[:, None]
    return PromptEmbeddings(
        llm=torch.randn(batch, 10, 16, generator=generator),
        llm_mask=llm_mask.long(),
        byt5=torch.randn(batch, 6, 1472, generator=generator),
        byt5_mask=byt5_mask.long(),
        vision=torch.randn(batch, 5, 24, generator=generator),
    )


@torch.no_grad()
def block_causal_reference(model: WorldPlayTransformer, prompt, context, chunk, timestep: float) -> torch.Tensor:
    """One pass over [context | chunk] with an explicit mask: context rows see [text, context], chunk rows see
    everything. This is what the cached context + chunk passes must compute."""
    cache = model.forward_text(prompt)
    x = torch.cat([context[0], chunk[0]], dim=2)
    viewmats, intrinsics, action = (torch.cat([a, b], dim=1) for a, b in zip(context[1:], chunk[1:]))
    context_frames, frames = context[0].shape[2], x.shape[2]
    timesteps = torch.tensor([[14.0] * context_frames + [timestep] * (frames - context_frames)])
    img, frame_vec, rope, camera, grid = model.prepare_frames(x, timesteps, viewmats, intrinsics, action, 0)
    tokens_per_frame = img.shape[2]
    text_len = cache.text_keys[0].shape[2]
    allowed = torch.ones(frames * tokens_per_frame, text_len + frames * tokens_per_frame, dtype=torch.bool)
    allowed[: context_frames * tokens_per_frame, text_len + context_frames * tokens_per_frame :] = False
    for index, block in enumerate(model.double_blocks):
        modulation = tuple(m.unsqueeze(2) for m in block.img_mod(frame_vec))
        branches = block.image_qkv(img, modulation, rope, camera)
        outputs = []
        for query, key, value in branches:
            keys = torch.cat([cache.text_keys[index], to_heads_first(key)], dim=2)
            values = torch.cat([cache.text_values[index], to_heads_first(value)], dim=2)
            attended = F.scaled_dot_product_attention(to_heads_first(query), keys, values, attn_mask=allowed)
            outputs.append(attended.transpose(1, 2).reshape(query.shape))
        img = block.finish_image(img, outputs[0], outputs[1], modulation, camera)
    return model.final_output(img, frame_vec, grid)[:, :, context_frames:]


def pick(inputs, frames: slice, rows: slice = slice(None)):
    """(x, viewmats, intrinsics, action) restricted to some latent frames and batch rows."""
    x, viewmats, intrinsics, action = inputs
    return x[rows, :, frames], viewmats[rows, frames], intrinsics[rows, frames], action[rows, frames]


@torch.no_grad()
def test_cached_context_plus_chunk_equals_one_block_causal_pass(model, io_prompt):
    inputs = random_inputs(frames=7, height=3, width=5)
    context, chunk = pick(inputs, slice(0, 3)), pick(inputs, slice(3, 7))
    cache = model.forward_context(*context, model.forward_text(io_prompt))
    out = model.forward_chunk(chunk[0], 600.0, *chunk[1:], cache)
    assert out.shape == (1, 4, 4, 3, 5)
    expected = block_causal_reference(model, io_prompt, context, chunk, 600.0)
    torch.testing.assert_close(out, expected, atol=ATOL, rtol=ATOL)


@torch.no_grad()
def test_chunk_causal_training_pass_equals_one_block_causal_pass(model, io_prompt):
    inputs = random_inputs(frames=6, height=3, width=5, seed=2)
    timesteps = torch.tensor([[14.0] * 3 + [600.0] * 3])
    out = model.forward_chunk_causal(inputs[0], timesteps, *inputs[1:], model.forward_text(io_prompt), chunk_latents=3)
    expected = block_causal_reference(model, io_prompt, pick(inputs, slice(0, 3)), pick(inputs, slice(3, 6)), 600.0)
    torch.testing.assert_close(out[:, :, 3:], expected, atol=ATOL, rtol=ATOL)


@torch.no_grad()
def test_text_cache_is_built_once_and_reused_across_chunks(model, io_prompt):
    inputs = random_inputs(frames=12, height=2, width=3, seed=3)
    text_cache = model.forward_text(io_prompt)
    keys_before = [key.clone() for key in text_cache.text_keys]
    for start in (4, 8):
        cache = model.forward_context(*pick(inputs, slice(0, start)), text_cache)
        assert cache.text_keys is text_cache.text_keys and cache.context_frames == start
        chunk = pick(inputs, slice(start, start + 4))
        assert torch.isfinite(model.forward_chunk(chunk[0], 800.0, *chunk[1:], cache)).all()
    # the text cache is never modified by context or chunk passes
    for before, after in zip(keys_before, text_cache.text_keys):
        assert torch.equal(before, after)
    # a context pass replaces, never extends, an existing context
    stale = model.forward_context(*pick(inputs, slice(4, 6)), text_cache)
    rebuilt = model.forward_context(*pick(inputs, slice(0, 4)), stale)
    fresh = model.forward_context(*pick(inputs, slice(0, 4)), text_cache)
    assert rebuilt.context_frames == 4
    torch.testing.assert_close(rebuilt.context_keys[1], fresh.context_keys[1])
    # the first chunk has no context: RoPE time starts at 0 and keys are [text, chunk]
    chunk = pick(inputs, slice(0, 4))
    first = model.forward_chunk(chunk[0], 1000.0, *chunk[1:], text_cache)
    assert first.shape == (1, 4, 4, 2, 3) and torch.isfinite(first).all()


@torch.no_grad()
def test_batched_prompts_of_different_lengths_equal_single_runs(model):
    prompt = random_prompt(valid_llm=[7, 3], valid_byt5=[2, 0])
    inputs = random_inputs(frames=4, height=2, width=3, batch=2, seed=5)
    timestep = torch.tensor([937.5, 500.0])
    batched = model.forward_bi(inputs[0], timestep, prompt, *inputs[1:])
    text_cache = model.forward_text(prompt)
    assert text_cache.text_mask is not None
    cache = model.forward_context(*pick(inputs, slice(0, 2)), text_cache)
    chunk = pick(inputs, slice(2, 4))
    batched_ar = model.forward_chunk(chunk[0], timestep, *chunk[1:], cache)
    for row in range(2):
        rows = slice(row, row + 1)
        fields = ("llm", "llm_mask", "byt5", "byt5_mask", "vision")
        single = PromptEmbeddings(*(getattr(prompt, name)[rows] for name in fields))
        whole = pick(inputs, slice(0, 4), rows)
        out = model.forward_bi(whole[0], timestep[rows], single, *whole[1:])
        torch.testing.assert_close(batched[rows], out, atol=ATOL, rtol=ATOL)
        single_cache = model.forward_text(single)
        assert single_cache.text_mask is None
        single_cache = model.forward_context(*pick(inputs, slice(0, 2), rows), single_cache)
        chunk = pick(inputs, slice(2, 4), rows)
        out = model.forward_chunk(chunk[0], timestep[rows], *chunk[1:], single_cache)
        torch.testing.assert_close(batched_ar[rows], out, atol=ATOL, rtol=ATOL)


def test_prope_scores_between_frames_see_only_relative_cameras():
    """Among image tokens, Pᵢᵀq · Pⱼ⁻¹k = qᵀ·Pᵢ·Pⱼ⁻¹·k: moving the world frame changes no score, and
    the output transform undoes the value transform. (Text keys enter untransformed, so the full model is not
    world-frame invariant; the official design is the same.)"""
    _, viewmats, intrinsics, _ = random_inputs(frames=3, height=1, width=1, seed=7)
    angle = 0.7
    world = torch.eye(4)
    cos, sin = math.cos(angle), math.sin(angle)
    world[:3, :3] = torch.tensor([[cos, 0, sin], [0, 1, 0], [-sin, 0, cos]])
    world[:3, 3] = torch.tensor([0.3, -1.2, 2.0])
    generator = torch.Generator().manual_seed(0)
    query, key = torch.randn(2, 1, 3, 2, 2, 8, generator=generator)  # [B, T, S, heads, D]

    def scores(cameras: CameraProjection) -> torch.Tensor:
        q, k = to_heads_first(cameras.query(query)), to_heads_first(cameras.key_value(key))
        return q @ k.transpose(-1, -2)

    base = CameraProjection(viewmats, intrinsics, torch.float32)
    torch.testing.assert_close(scores(base), scores(CameraProjection(viewmats @ world, intrinsics, torch.float32)))
    torch.testing.assert_close(base.output(base.key_value(key)), key, atol=1e-5, rtol=1e-5)
    # the principal point is dropped: only fx and fy matter
    shifted = intrinsics.clone()
    shifted[..., :2, 2] = 0.3
    torch.testing.assert_close(scores(base), scores(CameraProjection(viewmats, shifted, torch.float32)))


@torch.no_grad()
def test_spatial_patches_and_odd_grids():
    config = replace(
        TINY_TRANSFORMER_CONFIG,
        in_channels=3,
        out_channels=5,
        hidden_size=48,
        num_layers=1,
        patch_size=(1, 2, 2),
        rope_axes_dims=(4, 10, 10),
        byt5_states_dim=8,
        byt5_hidden_size=12,
    )
    torch.manual_seed(0)
    model = WorldPlayTransformer(config).eval()
    prompt = PromptEmbeddings(torch.randn(1, 4, 16), torch.ones(1, 4), torch.randn(1, 3, 8), torch.zeros(1, 3), None)
    inputs = random_inputs(frames=3, height=6, width=10, channels=3)
    assert model.forward_bi(inputs[0], 500.0, prompt, *inputs[1:]).shape == (1, 5, 3, 6, 10)
    cache = model.forward_context(*pick(inputs, slice(0, 1)), model.forward_text(prompt))
    chunk = pick(inputs, slice(1, 3))
    out = model.forward_chunk(chunk[0], 500.0, *chunk[1:], cache)
    assert out.shape == (1, 5, 2, 6, 10) and torch.isfinite(out).all()


@pytest.fixture(scope="module")
def io_prompt():
    return golden_prompt(load_io("tiny_transformer_io.safetensors"))


def test_prope_projection_of_the_worked_example():
    """Fact sheet §2.7: latent 4 of 'w-3, right-1'."""
    w2c = torch.tensor(
        [[0.99863, 0, -0.052336, 0.012561], [0, 1, 0, 0], [0.052336, 0, 0.99863, -0.239671], [0, 0, 0, 1]]
    )
    intrinsics = torch.tensor([[0.505051, 0, 0.5], [0, 0.897868, 0.5], [0, 0, 1]])
    cameras = CameraProjection(w2c[None, None], intrinsics[None, None], torch.float32)
    expected = torch.tensor(
        [[0.504358, 0, -0.026432, 0.006344], [0, 0.897868, 0, 0], [0.052336, 0, 0.99863, -0.239671], [0, 0, 0, 1]]
    )
    torch.testing.assert_close(cameras.projection[0, 0], expected, atol=1e-5, rtol=0)
    torch.testing.assert_close(cameras.projection_inv[0, 0] @ cameras.projection[0, 0], torch.eye(4), atol=1e-5, rtol=0)
