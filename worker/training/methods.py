"""Training methods as strategies: each turns a batch into a loss with the shared model; the loop is one.

- `ar`: chunk-causal flow matching with per-chunk noise (diffusion forcing) and memory samples, text stream
  at t=0, velocity target, loss only where the batch's mask says (fact sheet §2.3);
- `bi`: flow-matching action fine-tuning of the bidirectional model, one noise level per clip window,
  text stream at the same t (as the bidirectional rollout conditions it).
"""

from __future__ import annotations

import torch

from worker.models.transformer import AttentionWindow, WorldPlayTransformer
from worker.training.batches import Batch
from worldplay_cli.contract.training import ARMethod, BiMethod, SelfForcingMethod


def masked_mse(prediction: torch.Tensor, target: torch.Tensor, frame_mask: torch.Tensor) -> torch.Tensor:
    """Mean squared error over the supervised latent frames (mask [B, T]) of [B, C, T, h, w] tensors."""
    per_frame = (prediction.float() - target.float()).pow(2).mean(dim=(1, 3, 4))
    return (per_frame * frame_mask).sum() / frame_mask.sum().clamp(min=1.0)


class ChunkCausalAR:
    name = "ar"

    def __init__(self, config: ARMethod):
        self.config = config

    def loss(self, model: WorldPlayTransformer, batch: Batch) -> torch.Tensor:
        hidden_states, target = batch.model_input()
        text_cache = model.forward_text(batch.prompt, 0.0)
        prediction = model.forward_chunk_causal(
            hidden_states,
            batch.sigmas * 1000.0,
            batch.viewmats,
            batch.intrinsics,
            batch.actions,
            text_cache,
            self.config.chunk_latents,
            attention_window(self.config),
        )
        return masked_mse(prediction, target, batch.loss_mask)


class BidirectionalFlowMatching:
    name = "bi"

    def __init__(self, config: BiMethod):
        self.config = config

    def loss(self, model: WorldPlayTransformer, batch: Batch) -> torch.Tensor:
        hidden_states, target = batch.model_input()
        timestep = batch.sigmas[:, 0] * 1000.0
        prediction = model.forward_bi(
            hidden_states, timestep, batch.prompt, batch.viewmats, batch.intrinsics, batch.actions, timestep
        )
        return masked_mse(prediction, target, batch.loss_mask)


def attention_window(config: ARMethod | BiMethod | SelfForcingMethod) -> AttentionWindow | None:
    """The method's attention sink + local window, if it sets one."""
    if getattr(config, "sink_latents", None) is None:
        return None
    return AttentionWindow(config.sink_latents, config.local_window_latents)


def flow_matching_config(config: ARMethod | BiMethod | SelfForcingMethod) -> ARMethod | BiMethod:
    """The flow-matching method whose loss scores a model on held-out windows: the method itself, or for a
    distillation method the AR recipe over its window without memory samples (the student is an AR model)."""
    if isinstance(config, (ARMethod, BiMethod)):
        return config
    return ARMethod(
        chunk_latents=config.chunk_latents,
        window_latents=config.window_latents,
        memory_probability=0.0,
        sink_latents=config.sink_latents,
        local_window_latents=config.local_window_latents,
    )


def build_method(config: ARMethod | BiMethod | SelfForcingMethod) -> ChunkCausalAR | BidirectionalFlowMatching:
    config = flow_matching_config(config)
    return ChunkCausalAR(config) if isinstance(config, ARMethod) else BidirectionalFlowMatching(config)
