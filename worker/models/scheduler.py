"""Shifted Euler flow-matching schedule of HunyuanVideo-1.5 / WorldPlay, and classifier-free guidance.

σ runs linearly from 1 to 0 in n steps and is warped by the SD3 shift σ' = sσ/(1+(s-1)σ); the model sees
timesteps 1000·σ' (the last σ' = 0 is only a step target) and predicts a velocity v ≈ noise − data, so an
Euler step is x ← x + v·(σ'ᵢ₊₁ − σ'ᵢ). WorldPlay runs shift 5 whatever the shipped `scheduler/` config
says (the official pipeline replaces that config at call time); the 4-step distilled model uses the same
schedule with n = 4. The schedule is immutable and steps are addressed by index, so one object serves
every chunk of a rollout.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch

from worldplay_cli.contract import layout
from worldplay_cli.contract.layout import ModelLayout

INFERENCE_SHIFT = 5.0
NUM_TRAIN_TIMESTEPS = 1000
SCHEDULER_CONFIG_NAME = layout.SCHEDULER_CONFIG_NAME


class FlowMatchScheduler:
    def __init__(
        self, num_inference_steps: int, shift: float = INFERENCE_SHIFT, num_train_timesteps: int = NUM_TRAIN_TIMESTEPS
    ):
        if num_inference_steps < 1:
            raise ValueError(f"num_inference_steps must be at least 1, got {num_inference_steps}")
        if shift <= 0:
            raise ValueError(f"shift must be positive, got {shift}")
        self.num_inference_steps = num_inference_steps
        self.shift = shift
        self.num_train_timesteps = num_train_timesteps
        sigmas = torch.linspace(1, 0, num_inference_steps + 1)
        if shift != 1.0:
            sigmas = (shift * sigmas) / (1 + (shift - 1) * sigmas)
        # [n + 1] float32, from 1 down to 0
        self.sigmas = sigmas
        # [n] float32, what the model is conditioned on (0..1000 scale)
        self.timesteps = (sigmas[:-1] * num_train_timesteps).to(torch.float32)

    @classmethod
    def from_model_dir(
        cls, model_dir: str | Path, num_inference_steps: int, shift: float = INFERENCE_SHIFT
    ) -> FlowMatchScheduler:
        """Use `<model_dir>/scheduler/scheduler_config.json` for the training horizon; its `shift` is ignored
        (WorldPlay inference always runs `shift`, 5 by default), as in the official pipeline."""
        path = ModelLayout(model_dir).scheduler_config
        try:
            config = json.loads(path.read_text())
        except (OSError, json.JSONDecodeError) as error:
            raise ValueError(f"cannot read scheduler config {path}: {error}") from error
        if config.get("solver", "euler") != "euler" or not config.get("reverse", True):
            raise ValueError(f"{path}: only the reverse Euler flow-matching scheduler is supported")
        return cls(num_inference_steps, shift, int(config.get("num_train_timesteps", NUM_TRAIN_TIMESTEPS)))

    def __len__(self) -> int:
        return self.num_inference_steps

    def step(self, velocity: torch.Tensor, step_index: int, sample: torch.Tensor) -> torch.Tensor:
        """Euler step `step_index` (0-based), computed in fp32 and returned in fp32; the official pipeline
        stores the result back into bf16 latents, so callers wanting its numbers round after every step."""
        if not 0 <= step_index < self.num_inference_steps:
            raise IndexError(f"step_index {step_index} outside 0..{self.num_inference_steps - 1}")
        delta = (self.sigmas[step_index + 1] - self.sigmas[step_index]).item()
        return sample.float() + velocity.float() * delta


def classifier_free_guidance(uncond: torch.Tensor, cond: torch.Tensor, guidance_scale: float) -> torch.Tensor:
    """uncond + scale·(cond − uncond); no rescale (the official guidance_rescale is 0)."""
    return uncond + guidance_scale * (cond - uncond)
