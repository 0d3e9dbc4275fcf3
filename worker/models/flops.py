"""Analytic FLOP count of the WorldPlay transformers: what `worldplay bench` divides by the time it measured.

The HunyuanVideo-1.5 transformer:

Counted as multiply-adds × 2 over the image stream of every double-stream block, dense attention:
- linear, per image token per block: 2 × 13 d² (query/key/value 3 d², output 1 d², the ProPE output
  projection 1 d², the MLP 2 × mlp_ratio d² = 8 d² at the released ratio 4);
- attention, per block: two attentions (plain RoPE and the camera-projected ProPE one), each
  4 × queries × keys × d (scores and the weighted sum).
Embeddings, norms, modulation, the final layer and the text stream (run once per prompt in the AR
rollout) are left out: under 1 % of a chunk at 480p. An AR chunk is one forward over the context latents
(rebuilding their keys and values, attending to [text, context]) plus one forward per denoising step over
the chunk (attending to [text, context, chunk]); each classifier-free-guidance branch does both.

At the released size (d 2048, 54 blocks), 480×832 (1,560 tokens per latent), 1,985 text tokens, 20
context latents and 4 steps this gives 254.4 TFLOP per step, 1,100 TFLOP for the context pass and
2,117 TFLOP per chunk, the figures of the reference's physical-limit derivation (tests/test_flops.py).

The WAN-5B transformer (`WanWorldPlayTransformer`), counted the same way over every block:
- linear, per token per block: 2 × (7 d² + 2 d·ffn): self-attention query/key/value/output 4 d², the
  camera branch's output projection 1 d², the cross-attention's query and output 2 d² (its text keys and
  values are projected once per video, left out), the FFN's two matrices 2 d·ffn;
- attention, per block: the self-attention's two branches (RoPE and camera), each 4 × queries × keys × d
  over [context, own] keys, and the cross-attention, 4 × queries × text rows × d over all 512 UMT5 rows
  (the model attends to the zero padding too).
A chunk is one context pass (the context latents attending to themselves, rebuilt every chunk) plus one
forward of the chunk per step; no guidance branches. At the released size (d 3072, ffn 14336, 30 blocks),
1280×704 (880 tokens per latent), 16 context latents and 4 steps: 78.9 TFLOP per step, 279.0 TFLOP for the
context pass, 594.6 TFLOP per chunk (tests/test_flops.py).
"""

from __future__ import annotations

from dataclasses import dataclass

from worker.models.transformer import PromptEmbeddings, WorldPlayTransformerConfig
from worker.models.wan.transformer import WanConfig


@dataclass(frozen=True)
class Flops:
    linear: float
    attention: float

    @property
    def total(self) -> float:
        return self.linear + self.attention

    def __add__(self, other: Flops) -> Flops:
        return Flops(self.linear + other.linear, self.attention + other.attention)

    def __mul__(self, factor: float) -> Flops:
        return Flops(self.linear * factor, self.attention * factor)


def forward_flops(config: WorldPlayTransformerConfig, queries: int, keys: int) -> Flops:
    """One forward of `queries` image tokens attending to `keys` tokens (text and image together)."""
    width = config.hidden_size
    linear_per_token = 2 * (3 + 1 + 1 + 2 * config.mlp_ratio) * width**2
    linear = linear_per_token * queries * config.num_layers
    attention = 2 * 4 * queries * keys * width * config.num_layers
    return Flops(linear, attention)


def ar_chunk_flops(
    config: WorldPlayTransformerConfig,
    tokens_per_latent: int,
    chunk_latents: int,
    context_latents: int,
    text_tokens: int,
    steps: int,
    branches: int = 1,
) -> Flops:
    """One AR chunk: the context pass (when there is context) plus `steps` denoising forwards, per branch."""
    chunk_tokens = chunk_latents * tokens_per_latent
    context_tokens = context_latents * tokens_per_latent
    denoise = forward_flops(config, chunk_tokens, text_tokens + context_tokens + chunk_tokens) * steps
    context = forward_flops(config, context_tokens, text_tokens + context_tokens) if context_tokens else Flops(0, 0)
    return (denoise + context) * branches


def bi_chunk_flops(
    config: WorldPlayTransformerConfig,
    tokens_per_latent: int,
    chunk_latents: int,
    context_latents: int,
    text_tokens: int,
    steps: int,
    branches: int = 1,
) -> Flops:
    """One bidirectional chunk: every step is one joint forward over [context ‖ chunk]. The text stream runs
    in that forward too; as in the AR count its tokens are counted as keys only (its own projections and
    attention, ~2k queries against ~27k image queries at 480p, are left out: a lower bound by ~8 %)."""
    image_tokens = (context_latents + chunk_latents) * tokens_per_latent
    return forward_flops(config, image_tokens, text_tokens + image_tokens) * (steps * branches)


def wan_forward_flops(config: WanConfig, queries: int, keys: int, text_tokens: int) -> Flops:
    """One WAN forward of `queries` tokens self-attending to `keys` tokens (both branches) and cross-attending
    to `text_tokens` text rows."""
    width = config.inner_dim
    linear_per_token = 2 * (7 * width**2 + 2 * width * config.ffn_dim)
    linear = linear_per_token * queries * config.num_layers
    attention = 4 * queries * (2 * keys + text_tokens) * width * config.num_layers
    return Flops(linear, attention)


def wan_chunk_flops(
    config: WanConfig, tokens_per_latent: int, chunk_latents: int, context_latents: int, text_tokens: int, steps: int
) -> Flops:
    """One WAN chunk: the context pass (when there is context) plus `steps` forwards of the chunk."""
    chunk_tokens = chunk_latents * tokens_per_latent
    context_tokens = context_latents * tokens_per_latent
    denoise = wan_forward_flops(config, chunk_tokens, context_tokens + chunk_tokens, text_tokens) * steps
    context = wan_forward_flops(config, context_tokens, context_tokens, text_tokens) if context_tokens else Flops(0, 0)
    return denoise + context


def tokens_per_latent(config: WorldPlayTransformerConfig | WanConfig, latent_height: int, latent_width: int) -> int:
    _, patch_height, patch_width = config.patch_size
    return (latent_height // patch_height) * (latent_width // patch_width)


def text_tokens(prompt: PromptEmbeddings) -> int:
    """Text keys an image token attends to: every SigLIP token and the valid byT5 and LLM tokens (the model
    packs them and drops the padding)."""
    vision = prompt.vision.shape[1] if prompt.vision is not None else 0
    return vision + int(prompt.byt5_mask.sum()) + int(prompt.llm_mask.sum())
