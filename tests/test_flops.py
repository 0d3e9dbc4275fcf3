"""The analytic FLOP count against the reference's physical-limit derivation (released size, 480×832)."""

from __future__ import annotations

import pytest

from worker.models.flops import ar_chunk_flops, bi_chunk_flops, forward_flops, tokens_per_latent
from worker.models.transformer import WorldPlayTransformerConfig

RELEASED = WorldPlayTransformerConfig()
TOKENS = tokens_per_latent(RELEASED, 480 // 16, 832 // 16)
TEXT = 1000 + 256 + 729
TERA = 1e12


def test_tokens_of_a_480p_latent():
    assert TOKENS == 1560


def test_one_denoising_step_and_the_context_pass_are_the_reference_figures():
    step = forward_flops(RELEASED, 4 * TOKENS, TEXT + 20 * TOKENS + 4 * TOKENS)
    assert step.linear / TERA == pytest.approx(36.7, abs=0.05)
    assert step.attention / TERA == pytest.approx(217.7, abs=0.05)
    context = forward_flops(RELEASED, 20 * TOKENS, TEXT + 20 * TOKENS)
    assert context.linear / TERA == pytest.approx(183.7, abs=0.05)
    assert context.attention / TERA == pytest.approx(916.0, abs=0.1)


def test_a_steady_chunk_and_the_first_chunk():
    steady = ar_chunk_flops(RELEASED, TOKENS, 4, 20, TEXT, steps=4)
    assert steady.total / TERA == pytest.approx(2117, abs=1)
    assert steady.attention / steady.total == pytest.approx(0.84, abs=0.005)
    first = ar_chunk_flops(RELEASED, TOKENS, 4, 0, TEXT, steps=4)
    assert first.total / TERA == pytest.approx(329, abs=1)
    # guidance runs every pass once per branch
    assert ar_chunk_flops(RELEASED, TOKENS, 4, 20, TEXT, steps=4, branches=2).total == 2 * steady.total


def test_a_bidirectional_step_is_one_joint_forward():
    chunk = bi_chunk_flops(RELEASED, TOKENS, 16, 4, TEXT, steps=1)
    assert chunk == forward_flops(RELEASED, 20 * TOKENS, TEXT + 20 * TOKENS)


def test_the_wan_count_is_what_the_wan_model_computes():
    """FlopCounterMode over a small WAN model's chunk pass: its block linears are the linear count exactly, its
    attention matmuls (the math kernel) the attention count plus the camera transforms the count leaves out."""
    import torch
    from torch.nn.attention import SDPBackend, sdpa_kernel
    from torch.utils.flop_counter import FlopCounterMode

    from worker.models.flops import wan_forward_flops
    from worker.models.wan.transformer import WanConfig, WanWorldPlayTransformer

    config = WanConfig(
        num_attention_heads=2, attention_head_dim=48, in_channels=8, out_channels=8, text_dim=16, freq_dim=32,
        ffn_dim=256, num_layers=2,
    )  # fmt: skip
    model = WanWorldPlayTransformer(config, attention_backend="sdpa").eval()
    context, chunk, grid, text_rows = 3, 4, (4, 6), 7
    tokens = tokens_per_latent(config, *grid)
    cameras = (torch.eye(4).expand(1, chunk, 4, 4), torch.eye(3).expand(1, chunk, 3, 3), torch.zeros(1, chunk))
    with torch.no_grad(), sdpa_kernel(SDPBackend.MATH):
        text = model.encode_text(torch.randn(1, text_rows, config.text_dim))
        cache = model.forward_context(torch.randn(1, 8, context, *grid), 14.0, text, *(c[:, :context] for c in cameras))
        with FlopCounterMode(display=False) as counter:
            model.forward_chunk(torch.randn(1, 8, chunk, *grid), 500.0, text, *cameras, cache)
    blocks = {str(op): flops for op, flops in counter.get_flop_counts()["WanBlock"].items()}
    count = wan_forward_flops(config, chunk * tokens, (context + chunk) * tokens, text_rows)
    assert blocks["aten.addmm"] == count.linear
    # the camera branch transforms q, k, v and the output per 4-dim group: 4 x 2 x 4 x d per token per block
    camera = 4 * 2 * 4 * config.inner_dim * chunk * tokens * config.num_layers
    assert blocks["aten.bmm"] == count.attention + camera


def test_a_released_wan_chunk():
    from worker.models.flops import wan_chunk_flops, wan_forward_flops
    from worker.models.wan.transformer import WanConfig

    released = WanConfig()
    tokens = tokens_per_latent(released, 704 // 16, 1280 // 16)
    assert tokens == 880
    step = wan_forward_flops(released, 4 * tokens, 20 * tokens, 512)
    assert step.total / TERA == pytest.approx(78.9, abs=0.05)
    assert wan_forward_flops(released, 16 * tokens, 16 * tokens, 512).total / TERA == pytest.approx(279.0, abs=0.05)
    steady = wan_chunk_flops(released, tokens, 4, 16, 512, steps=4)
    assert steady.total / TERA == pytest.approx(594.6, abs=0.05)
    # the first chunk has no context pass
    assert (
        wan_chunk_flops(released, tokens, 4, 0, 512, steps=4)
        == wan_forward_flops(released, 4 * tokens, 4 * tokens, 512) * 4
    )
