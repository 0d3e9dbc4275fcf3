"""The attention entry point: backend choice is explicit and reported; key masks behave; every attention
pattern of the transformer runs through it."""

from __future__ import annotations

import pytest
import torch

from worker.models.attention import AttentionProcessor, attention, flash_attn_installed, resolve_backend
from worker.models.tiny import TINY_TRANSFORMER_CONFIG
from worker.models.transformer import PromptEmbeddings, WorldPlayTransformer


def test_auto_resolves_to_sdpa_on_cpu_and_flash_is_never_a_silent_fallback():
    assert resolve_backend("auto", "cpu", torch.bfloat16) == "sdpa"
    assert resolve_backend("sdpa", "cpu", torch.float32) == "sdpa"
    with pytest.raises(RuntimeError, match="'flash' cannot run"):
        resolve_backend("flash", "cpu", torch.bfloat16)
    with pytest.raises(ValueError, match="unknown attention backend 'xformers'"):
        resolve_backend("xformers", "cpu", torch.float32)
    if not flash_attn_installed():
        with pytest.raises(RuntimeError, match="not installed"):
            resolve_backend("flash", "cuda", torch.bfloat16)


def test_key_mask_equals_dropping_the_masked_keys():
    generator = torch.Generator().manual_seed(0)
    query, key, value = (torch.randn(2, 3, length, 8, generator=generator) for length in (5, 7, 7))
    key_mask = torch.tensor([[True] * 7, [True] * 4 + [False] * 3])
    out = attention(query, key, value, key_mask)
    torch.testing.assert_close(out[:1], attention(query[:1], key[:1], value[:1]))
    torch.testing.assert_close(out[1:], attention(query[1:], key[1:, :, :4], value[1:, :, :4]))
    scores = (query[1:] @ key[1:, :, :4].transpose(-1, -2)) / 8**0.5
    torch.testing.assert_close(out[1:], scores.softmax(-1) @ value[1:, :, :4])


@pytest.mark.skipif(flash_attn_installed(), reason="needs a machine where flash-attn cannot run")
def test_every_pass_runs_through_the_models_attention_processor():
    """Asking for flash on CPU fails in every pass, the chunk-causal training pass included: none of them
    reaches a kernel behind the processor's back."""
    generator = torch.Generator().manual_seed(0)
    prompt = PromptEmbeddings(
        torch.randn(1, 3, 16, generator=generator),
        torch.ones(1, 3),
        torch.randn(1, 2, 1472, generator=generator),
        torch.ones(1, 2),
    )
    hidden = torch.randn(1, 9, 2, 2, 2, generator=generator)
    cameras = (torch.eye(4).expand(1, 2, 4, 4), torch.eye(3).expand(1, 2, 3, 3), torch.zeros(1, 2))
    model = WorldPlayTransformer(TINY_TRANSFORMER_CONFIG, attention_backend="sdpa")
    text_cache = model.forward_text(prompt)
    model.set_attention_processor(AttentionProcessor("flash"))
    passes = {
        "bi": lambda: model.forward_bi(hidden, 500.0, prompt, *cameras),
        "text": lambda: model.forward_text(prompt),
        "context": lambda: model.forward_context(hidden, *cameras, text_cache),
        "chunk": lambda: model.forward_chunk(hidden, 500.0, *cameras, text_cache),
        "chunk-causal": lambda: model.forward_chunk_causal(hidden, torch.full((1, 2), 500.0), *cameras, text_cache, 1),
    }
    for run in passes.values():
        with pytest.raises(RuntimeError, match="'flash' cannot run"):
            run()
