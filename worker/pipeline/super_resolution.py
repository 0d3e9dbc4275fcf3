"""The 720p super-resolution stage: finished 480p latents -> 720p latents (the official `--sr`).

    resize     the 480p latents, frame by frame, bilinearly to the 720p bucket's latent grid
    upsample   the latent upsampler (fp32), back to the transformer's dtype
    noise      (1 - 0.7)·upsampled + 0.7·noise: the low-resolution condition
    denoise    6 Euler steps at shift 2.0, no CFG, from seeded noise: the SR transformer sees
               [latents | image condition + mask on frame 0 | noisy LQ + ones]; from the first step whose
               timestep is below 1000·0.7 on, the LQ part and its ones are zeroed. Each step also embeds the
               next step's timestep (meanflow `r`, 0 at the last).

The recipe and what the stage can serve are `worldplay_cli.contract.sr`. The pipeline supplies the image
condition (the reference image encoded at the 720p size) and the prompt states (SigLIP crop at the
image's 720p bucket), then decodes the result tiled. Unlike the main loop the latents stay fp32 between
steps, as in the official stage.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F

from worker.models.checkpoint import load_sr_transformer
from worker.models.scheduler import FlowMatchScheduler
from worker.models.transformer import PromptEmbeddings, WorldPlayTransformer
from worker.models.upsampler import LatentUpsampler, load_upsampler
from worldplay_cli.contract import sr

StepReport = Callable[[int, int], None]  # (steps done, steps)


def resize_latents(latents: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """[B, C, T, h, w] -> [B, C, T, H, W], bilinear per frame (align_corners False)."""
    batch, channels, frames = latents.shape[:3]
    flat = latents.permute(0, 2, 1, 3, 4).flatten(0, 1)
    resized = F.interpolate(flat, size=size, mode="bilinear", align_corners=False)
    return resized.unflatten(0, (batch, frames)).permute(0, 2, 1, 3, 4).contiguous()


def noisy_condition(upsampled: torch.Tensor, noise: torch.Tensor, strength: float = sr.STRENGTH) -> torch.Tensor:
    """The low-resolution condition: the upsampled latents moved `strength` of the way to noise, in fp32.

    The weight is formed as the official stage forms it (a 1000-scale timestep, divided back), so the
    fp32 numbers agree to the last bit."""
    weight = (torch.tensor([1000.0]) * strength / 1000.0).to(upsampled.device)
    return (1 - weight) * upsampled.float() + weight * noise.float()


def sr_condition(image_condition: torch.Tensor, noisy_lq: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The channels after the latents, as [image cond | mask | noisy LQ | ones] and the same with the LQ part
    and its ones zeroed. image_condition [B, C + 1, 1, H, W] (scaled latent | 1) sits on frame 0 only."""
    batch, _, frames, height, width = noisy_lq.shape
    image_part = torch.zeros(batch, image_condition.shape[1], frames, height, width, device=noisy_lq.device)
    image_part[:, :, :1] = image_condition.float()
    ones = torch.ones(batch, 1, frames, height, width, device=noisy_lq.device)
    condition = torch.cat([image_part, noisy_lq.float(), ones], dim=1)
    zeroed = torch.cat([image_part, torch.zeros_like(noisy_lq, dtype=torch.float32), torch.zeros_like(ones)], dim=1)
    return condition, zeroed


@dataclass
class SuperResolution:
    """The SR transformer and the latent upsampler, loaded once and kept beside the 480p model."""

    transformer: WorldPlayTransformer
    upsampler: LatentUpsampler

    @classmethod
    def load(
        cls,
        transformer_dir: str | Path,
        upsampler_dir: str | Path,
        device: torch.device | str,
        dtype: torch.dtype,
        attention_backend: str = "auto",
    ) -> SuperResolution:
        transformer = load_sr_transformer(
            transformer_dir, dtype=dtype, device=device, attention_backend=attention_backend
        )
        return cls(transformer, load_upsampler(upsampler_dir, device))

    @property
    def latent_channels(self) -> int:
        return self.transformer.config.out_channels

    def scheduler(self) -> FlowMatchScheduler:
        return FlowMatchScheduler(sr.STEPS, shift=sr.SHIFT)

    @torch.inference_mode()
    def lq_condition(self, latents: torch.Tensor, size: tuple[int, int], noise: torch.Tensor) -> torch.Tensor:
        """Resize, upsample and noise the (scaled) 480p latents [1, C, T, h, w] onto the latent grid `size`."""
        dtype = self.transformer.dtype
        resized = resize_latents(latents.to(dtype), size)
        upsampled = self.upsampler(resized.float()).to(dtype)
        return noisy_condition(upsampled, noise.to(upsampled.device))

    @torch.inference_mode()
    def denoise(
        self,
        noise: torch.Tensor,
        condition: torch.Tensor,
        zeroed: torch.Tensor,
        prompt: PromptEmbeddings,
        on_step: StepReport | None = None,
    ) -> torch.Tensor:
        """The SR loop from `noise` [1, C, T, H, W]; returns the (scaled) 720p latents, fp32."""
        scheduler = self.scheduler()
        timesteps = scheduler.timesteps.tolist()
        targets = timesteps[1:] + [0.0]
        dtype = self.transformer.dtype
        latents = noise.float().to(condition.device)
        for index, (timestep, target) in enumerate(zip(timesteps, targets)):
            channels = condition if timestep >= 1000 * sr.STRENGTH else zeroed
            hidden = torch.cat([latents, channels], dim=1).to(dtype)
            velocity = self.transformer.forward_sr(hidden, timestep, prompt, timestep_r=target)
            latents = scheduler.step(velocity, index, latents)
            if on_step is not None:
                on_step(index + 1, len(timesteps))
        return latents
