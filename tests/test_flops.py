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
