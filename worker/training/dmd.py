"""DMD / DMD2 machinery shared by the distillation methods (fact sheet §3.0).

Conventions: σ is the flow-matching noise level, t = 1000·σ, x_t = (1−σ)·x0 + σ·ε, the networks predict a
velocity v ≈ ε − x0, so x̂0 = x_t − σ·v.

- Student timesteps: the `denoising_steps` list, warped through the shift-s schedule when asked
  (t ← 1000·s·τ/(1+(s−1)·τ), τ = t/1000): [1000, 750, 500, 250] at s = 5 gives [1000, 937.5, 833.3, 625],
  the 4-step schedule the `ar-distilled` variant runs at inference.
- Score timesteps: t ~ U{0..999}, shifted the same way, clamped to [min_ratio, max_ratio]·1000.
- Generator loss: with x̂0_fake (critic) and x̂0_real (teacher, optionally guided) at a common x_t,
  g = (x̂0_fake − x̂0_real) / mean|x̂0 − x̂0_real| (per sample, clamped at 1e-6, then nan_to_num), and
  L_G = ½·mean((x̂0 − sg(x̂0 − g))²), whose gradient with respect to x̂0 is g/N.
- Critic loss: flow matching on detached generator samples, L_C = mean((v_φ(x_t, t) − (ε − x̂0))²).
Both means take an optional per-latent mask [B, T] (streaming windows): Σ(v·m)/max(Σm, 1) over elements.
"""

from __future__ import annotations

import torch

from worker.models.transformer import PromptEmbeddings, WorldPlayTransformer
from worker.training.batches import Batch, with_condition

NORMALISER_FLOOR = 1e-6


def shift_timesteps(timesteps: torch.Tensor, shift: float) -> torch.Tensor:
    """The SD3 shift on the 0..1000 scale: 1000·s·τ/(1 + (s−1)·τ) with τ = t/1000."""
    tau = timesteps / 1000.0
    return 1000.0 * shift * tau / (1.0 + (shift - 1.0) * tau)


def student_timesteps(steps: list[float], warp: bool, shift: float) -> list[float]:
    """The student's timesteps, warped through the shifted schedule when `warp`."""
    values = torch.tensor(steps, dtype=torch.float64)
    return (shift_timesteps(values, shift) if warp else values).tolist()


def sample_score_timesteps(
    generator: torch.Generator, count: int, shift: float, min_ratio: float, max_ratio: float
) -> torch.Tensor:
    """[count] float32 score timesteps: U{0..999}, shifted, clamped to [min_ratio, max_ratio]·1000."""
    raw = torch.randint(0, 1000, (count,), generator=generator).to(torch.float64)
    return shift_timesteps(raw, shift).clamp(min_ratio * 1000.0, max_ratio * 1000.0).float()


def masked_mean(values: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
    """Mean of [B, C, T, h, w] values, over the latents a [B, T] mask selects (all when None)."""
    if mask is None:
        return values.mean()
    weights = mask[:, None, :, None, None].to(values.dtype).expand_as(values)
    return (values * weights).sum() / weights.sum().clamp_min(1.0)


def dmd_generator_loss(
    x0: torch.Tensor, x0_fake: torch.Tensor, x0_real: torch.Tensor, mask: torch.Tensor | None = None
) -> torch.Tensor:
    """The DMD surrogate whose gradient with respect to `x0` is the normalised score difference g (over N)."""
    with torch.no_grad():
        dims = tuple(range(1, x0.ndim))
        if mask is None:
            normaliser = (x0 - x0_real).abs().mean(dim=dims, keepdim=True)
        else:
            weights = mask[:, None, :, None, None].to(x0.dtype).expand_as(x0)
            normaliser = ((x0 - x0_real).abs() * weights).sum(dims, keepdim=True) / weights.sum(
                dims, keepdim=True
            ).clamp_min(1.0)
        gradient = torch.nan_to_num((x0_fake - x0_real) / normaliser.clamp_min(NORMALISER_FLOOR))
        target = x0 - gradient
    return 0.5 * masked_mean((x0.float() - target.float()).pow(2), mask)


def critic_flow_loss(
    velocity: torch.Tensor, noise: torch.Tensor, x0: torch.Tensor, mask: torch.Tensor | None = None
) -> torch.Tensor:
    """Flow matching of the critic on a detached generator sample: velocity target ε − x̂0."""
    return masked_mean((velocity.float() - (noise - x0).float()).pow(2), mask)


def noised(x0: torch.Tensor, noise: torch.Tensor, timesteps: torch.Tensor) -> torch.Tensor:
    """x_t = (1−σ)·x0 + σ·ε for per-sample timesteps [B] (0..1000)."""
    sigma = (timesteps / 1000.0).to(x0.dtype)[:, None, None, None, None]
    return (1 - sigma) * x0 + sigma * noise


def score_velocity(
    network: WorldPlayTransformer,
    attention: str,
    noisy: torch.Tensor,
    timesteps: torch.Tensor,
    batch: Batch,
    prompt: PromptEmbeddings,
    chunk_latents: int,
) -> torch.Tensor:
    """A score network's velocity [B, C, T, h, w] for a whole window x_t at per-sample timesteps [B]:
    bidirectionally (`forward_bi`, text stream at t) or chunk-causally (`forward_chunk_causal`, text at 0,
    every chunk at t, as the AR model's window samples train it)."""
    hidden = with_condition(noisy, batch.image_cond)
    if attention == "bidirectional":
        out = network.forward_bi(
            hidden, timesteps, prompt, batch.viewmats, batch.intrinsics, batch.actions, text_timestep=timesteps
        )
    else:
        frames = noisy.shape[2]
        cache = network.forward_text(prompt, 0.0)
        out = network.forward_chunk_causal(
            hidden,
            timesteps[:, None].expand(-1, frames),
            batch.viewmats,
            batch.intrinsics,
            batch.actions,
            cache,
            chunk_latents,
        )
    return out.float()


def x0_prediction(velocity: torch.Tensor, noisy: torch.Tensor, timesteps: torch.Tensor) -> torch.Tensor:
    sigma = (timesteps / 1000.0).float()[:, None, None, None, None]
    return noisy.float() - sigma * velocity.float()
