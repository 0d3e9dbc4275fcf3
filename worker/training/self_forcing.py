"""Self-Forcing DMD2 (fact sheet §3.1) for the WorldPlay AR model: the student rolls out like inference.

One iteration, for a window of `window_latents` latents in chunks of `chunk_latents`:
1. Student rollout from noise, chunk by chunk, exactly as `ar_rollout` runs the model: before each chunk
   the reconstituted context (the memory selection over the chunks generated so far) is re-encoded with
   `forward_context` from the detached chunk outputs, re-noised to `context_noise` (0: clean latents at the
   inference context timestep 14); the chunk then runs the student timesteps up to its exit step, without
   gradients, then the exit step itself with gradients (when the student updates this iteration and the
   chunk starts at or after `start_gradient_frame`). Between steps `sde` re-noises x̂0 to the next level
   with fresh noise, `ode` takes the DDIM step with ε̂ = (x_t − (1−σ)·x̂0)/σ (what the Euler sampler of
   inference does). The exit step's x̂0 is the chunk's output.
2. Generator loss (only every `generator_update_interval` iterations): DMD at a score timestep, the
   teacher's x̂0 guided by `real_score_guidance_scale` against the negative prompt.
3. Critic loss, every iteration, on the **same** rollout detached: one rollout per iteration (fact sheet
   §3.6 item 1), not a second no-grad rollout with other noise.

All randomness comes from generators seeded by the run seed and the global sample index (noise, score
timesteps) or the step (exit steps, the same on every rank), like the training samples, so a resumed run
continues bit for bit and N ranks draw what one process accumulating N micro-batches draws.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import NamedTuple

import numpy as np
import torch

from worker.models.transformer import KVCache, PromptEmbeddings, WorldPlayTransformer
from worker.pipeline.memory import sample_points_in_sphere, select_context_latents
from worker.pipeline.rollout import AR_TEXT_TIMESTEP, CONTEXT_TIMESTEP
from worker.training.batches import Batch, pad_tokens, with_condition
from worker.training.dataset import PromptStates
from worker.training.dmd import (
    critic_flow_loss,
    dmd_generator_loss,
    noised,
    sample_score_timesteps,
    score_velocity,
    student_timesteps,
    x0_prediction,
)
from worker.training.methods import attention_window
from worldplay_cli.contract.training import SelfForcingMethod

# Salts of the distillation random streams (batches.py uses 1 and 2).
_DISTILL, _SHARED = 3, 4


def seeded_generator(*key: int) -> torch.Generator:
    draw = np.random.default_rng([*key]).integers(0, 2**62)
    return torch.Generator().manual_seed(int(draw))


class Draws(NamedTuple):
    """The random streams of one micro-batch: `sample` (noise, score timesteps) is its own; `shared` (exit
    steps, streaming new-latent counts: what decides how many forwards run) is the iteration's, the same on
    every rank and micro-batch, as upstream broadcasts rank 0's draw; FSDP needs every rank to run the same
    forwards."""

    sample: torch.Generator
    shared: torch.Generator


def iteration_draws(seed: int, step: int, global_index: int) -> Draws:
    return Draws(seeded_generator(seed, _DISTILL, global_index), seeded_generator(seed, _SHARED, step))


def negative_prompt(states: PromptStates, like: PromptEmbeddings) -> PromptEmbeddings:
    """The negative prompt for every row of `like`, keeping each row's image tokens (the uncond branch of
    inference keeps the image)."""
    batch = like.llm.shape[0]
    llm, llm_mask = pad_tokens([states.llm] * batch)
    byt5, byt5_mask = pad_tokens([states.byt5] * batch)
    device = like.llm.device
    return PromptEmbeddings(llm.to(device), llm_mask.to(device), byt5.to(device), byt5_mask.to(device), like.vision)


class Networks(NamedTuple):
    student: WorldPlayTransformer
    teacher: WorldPlayTransformer
    critic: WorldPlayTransformer


@dataclass
class Losses:
    critic: torch.Tensor
    generator: torch.Tensor | None  # None on critic-only iterations
    rollout: torch.Tensor  # the detached student window [B, C, T, h, w]


class SelfForcing:
    name = "self_forcing"

    def __init__(self, config: SelfForcingMethod, negative: PromptStates, seed: int):
        self.config = config
        self.negative = negative
        self.timesteps = student_timesteps(config.denoising_steps, config.warp_denoising_step, config.flow_shift)
        self.points = sample_points_in_sphere(config.memory_points, seed=seed)
        self.window = attention_window(config)

    def updates_student(self, step: int) -> bool:
        return step % self.config.generator_update_interval == 0

    def state_dict(self) -> dict:
        """What a checkpoint must keep of the method between iterations (nothing: each iteration stands alone)."""
        return {}

    def load_state_dict(self, state: dict) -> None:
        pass

    # -- the student rollout ------------------------------------------------------------------------

    def exit_steps(self, generator: torch.Generator, num_chunks: int) -> list[int]:
        steps = len(self.timesteps)
        if self.config.last_step_only:
            return [steps - 1] * num_chunks
        if self.config.same_step_across_blocks:
            return [int(torch.randint(0, steps, (1,), generator=generator))] * num_chunks
        return torch.randint(0, steps, (num_chunks,), generator=generator).tolist()

    def context_frames(self, batch: Batch, start: int) -> list[int]:
        """The latents the chunk at `start` is conditioned on: its attention sink and local window, else
        inference's memory selection over the cameras (every earlier latent while there are at most 20).
        Batch rows must select the same latents."""
        chunk = self.config.chunk_latents
        if self.window is not None:
            return self.window.context_latents(start, chunk)
        selections = {
            tuple(select_context_latents(row.double().cpu(), start, chunk, self.points)) for row in batch.viewmats
        }
        if len(selections) > 1:
            raise ValueError("the rows of a self-forcing batch select different memory; use data.batch_size 1")
        return list(selections.pop())

    def rollout(
        self,
        student: WorldPlayTransformer,
        batch: Batch,
        draws: Draws,
        with_grad: bool,
        start: int = 0,
        end: int | None = None,
        history: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """The student's latents [start, end) of the batch's window [B, C, end - start, h, w] (fp32), after
        the detached `history` (its latents [0, start)); carries gradients through each chunk's exit step
        when `with_grad`."""
        config = self.config
        chunk = config.chunk_latents
        shape = batch.latents.shape
        end = shape[2] if end is None else end
        num_chunks = (end - start) // chunk
        exits = self.exit_steps(draws.shared, num_chunks)
        generator = draws.sample
        device = batch.latents.device
        cond = full_condition(batch)
        grad_context = torch.enable_grad() if with_grad else torch.no_grad()
        with grad_context:
            text_cache = student.forward_text(batch.prompt, AR_TEXT_TIMESTEP)
        outputs: list[torch.Tensor] = [] if history is None else [history.detach()]
        for index in range(num_chunks):
            block_start = start + index * chunk
            cache = self._context_cache(student, batch, cond, outputs, block_start, text_cache, generator)
            hidden_cond = cond[:, :, block_start : block_start + chunk]
            frames = slice(block_start, block_start + chunk)
            x = torch.randn((shape[0], shape[1], chunk, *shape[3:]), generator=generator).to(device)
            chunk_grad = with_grad and block_start >= config.start_gradient_frame
            for step, timestep in enumerate(self.timesteps[: exits[index] + 1]):
                is_exit = step == exits[index]
                grad_mode = torch.enable_grad() if is_exit and chunk_grad else torch.no_grad()
                with grad_mode:
                    velocity = student.forward_chunk(
                        torch.cat([x, hidden_cond], dim=1),
                        timestep,
                        batch.viewmats[:, frames],
                        batch.intrinsics[:, frames],
                        batch.actions[:, frames],
                        cache,
                    ).float()
                    sigma = timestep / 1000.0
                    x0 = x.float() - sigma * velocity
                if not is_exit:
                    next_sigma = self.timesteps[step + 1] / 1000.0
                    if config.student_sample_type == "sde":
                        noise = torch.randn(x0.shape, generator=generator).to(device)
                    else:
                        noise = (x.float() - (1 - sigma) * x0) / sigma
                    x = (1 - next_sigma) * x0 + next_sigma * noise
            outputs.append(x0)
        return torch.cat(outputs[0 if history is None else 1 :], dim=2)

    def _context_cache(
        self,
        student: WorldPlayTransformer,
        batch: Batch,
        cond: torch.Tensor,
        outputs: list[torch.Tensor],
        start: int,
        text_cache: KVCache,
        generator: torch.Generator,
    ) -> KVCache:
        """The KV re-encode of the chunks generated so far (no gradients), as the AR inference rebuilds it."""
        if not outputs:
            return text_cache.without_context()
        context = self.context_frames(batch, start)
        generated = torch.cat(outputs, dim=2).detach()[:, :, context]
        timestep = CONTEXT_TIMESTEP
        if self.config.context_noise > 0:
            timestep = self.config.context_noise
            noise = torch.randn(generated.shape, generator=generator).to(generated.device)
            generated = noised(generated, noise, torch.full((generated.shape[0],), timestep, device=generated.device))
        with torch.no_grad():
            return student.forward_context(
                torch.cat([generated, cond[:, :, context]], dim=1),
                batch.viewmats[:, context],
                batch.intrinsics[:, context],
                batch.actions[:, context],
                text_cache,
                timestep,
            )

    # -- scores and losses --------------------------------------------------------------------------

    def velocity(
        self,
        network: WorldPlayTransformer,
        attention: str,
        noisy: torch.Tensor,
        timesteps: torch.Tensor,
        batch: Batch,
        prompt: PromptEmbeddings,
        memory=None,
    ) -> torch.Tensor:
        """A score network's velocity on the window `noisy` (context forcing adds a memory to condition on)."""
        return score_velocity(network, attention, noisy, timesteps, batch, prompt, self.config.chunk_latents)

    def real_x0(self, teacher: WorldPlayTransformer, noisy, timesteps, batch: Batch, memory=None) -> torch.Tensor:
        """The teacher's x̂0, guided against the negative prompt when the guidance scale is above 1."""
        attention = self.config.teacher.attention
        cond = x0_prediction(
            self.velocity(teacher, attention, noisy, timesteps, batch, batch.prompt, memory), noisy, timesteps
        )
        scale = self.config.real_score_guidance_scale
        if scale == 1.0:
            return cond
        uncond_prompt = negative_prompt(self.negative, batch.prompt)
        uncond = x0_prediction(
            self.velocity(teacher, attention, noisy, timesteps, batch, uncond_prompt, memory), noisy, timesteps
        )
        return uncond + scale * (cond - uncond)

    def fake_velocity(self, critic: WorldPlayTransformer, noisy, timesteps, batch: Batch, memory=None):
        return self.velocity(critic, self.config.critic_attention, noisy, timesteps, batch, batch.prompt, memory)

    def score_timesteps(self, generator: torch.Generator, count: int, device) -> torch.Tensor:
        config = self.config
        timesteps = sample_score_timesteps(
            generator, count, config.flow_shift, config.min_timestep_ratio, config.max_timestep_ratio
        )
        return timesteps.to(device)

    def generator_loss(
        self,
        x0: torch.Tensor,
        teacher: WorldPlayTransformer,
        critic: WorldPlayTransformer,
        batch: Batch,
        generator: torch.Generator,
        mask: torch.Tensor | None = None,
        memory=None,
    ) -> torch.Tensor:
        timesteps = self.score_timesteps(generator, x0.shape[0], x0.device)
        noise = torch.randn(x0.shape, generator=generator).to(x0.device)
        with torch.no_grad():
            noisy = noised(x0.detach(), noise, timesteps)
            x0_fake = x0_prediction(self.fake_velocity(critic, noisy, timesteps, batch, memory), noisy, timesteps)
            x0_real = self.real_x0(teacher, noisy, timesteps, batch, memory)
        return dmd_generator_loss(x0, x0_fake, x0_real, mask)

    def critic_loss(
        self,
        x0: torch.Tensor,
        critic: WorldPlayTransformer,
        batch: Batch,
        generator: torch.Generator,
        mask: torch.Tensor | None = None,
        memory=None,
    ) -> torch.Tensor:
        x0 = x0.detach()
        timesteps = self.score_timesteps(generator, x0.shape[0], x0.device)
        noise = torch.randn(x0.shape, generator=generator).to(x0.device)
        velocity = self.fake_velocity(critic, noised(x0, noise, timesteps), timesteps, batch, memory)
        return critic_flow_loss(velocity, noise, x0, mask)

    def losses(
        self,
        networks: Networks,
        draw: Callable[[int], Batch],
        step: int,
        slot: int,
        draws: Draws,
        update_student: bool,
    ) -> Losses:
        """One rollout of the step's batch (`draw(step)`); the generator loss when the student updates; the
        critic loss on the same sample. `slot` (the micro-batch) only matters to streaming methods."""
        return self.window_losses(networks, draw(step), draws, update_student)

    def window_losses(self, networks: Networks, batch: Batch, draws: Draws, update_student: bool) -> Losses:
        student, teacher, critic = networks
        x0 = self.rollout(student, batch, draws, with_grad=update_student)
        generator_loss = self.generator_loss(x0, teacher, critic, batch, draws.sample) if update_student else None
        critic_loss = self.critic_loss(x0, critic, batch, draws.sample)
        return Losses(critic=critic_loss, generator=generator_loss, rollout=x0.detach())


def full_condition(batch: Batch) -> torch.Tensor:
    """[cond | mask] channels [B, C + 1, T, h, w] of the whole window, to be taken by frame."""
    return with_condition(torch.zeros_like(batch.latents), batch.image_cond)[:, batch.latents.shape[1] :]
