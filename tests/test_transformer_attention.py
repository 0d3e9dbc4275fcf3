"""The attention entry point: backend choice is explicit and reported; key masks behave."""

from __future__ import annotations

import pytest
import torch

from worker.models.attention import attention, flash_attn_installed, resolve_backend


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
