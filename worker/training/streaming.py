"""Streaming long tuning (fact sheet §3.3, LongLive's "train long, test long") on top of Self-Forcing.

The student streams one long sequence (a stage's length, e.g. 39 or 240 latents) over many iterations;
each iteration it generates the next new latents and the teacher and critic score only the newest window
of `streaming_chunk_size` latents:
- new latents: the first window of a sequence is all new (no overlap); later ones are `window − overlap`
  new latents (a fixed overlap, or drawn from range(min_new, window, chunk)), or whatever is left. For 39
  latents, window 9, overlap 3: 9, 6, 6, 6, 6, 6 (six iterations per sequence);
- score window: with the anchor re-encode, [anchor, the last window − k latents] where the anchor is the
  last 4(k−1)+1 decoded frames before them, encoded again (k = `streaming_anchor_inject_k`): the window
  starts like an I2V clip, and the anchor is also the window's image condition (the clip's first frame is
  long gone after a few windows; upstream keeps the clip's first-frame condition). Without it the window
  is the latest `window` latents and the condition stays the clip's first frame;
- chunk mask: true on the new latents only, so the overlap is context for the scores but neither the DMD
  nor the critic loss counts it; both are masked means over one detached window (one rollout).

Persistent state, per micro-batch slot, across iterations: the stage, the step whose batch the sequence
streams, its length and the student's latents so far (detached). The student's context for the next chunk
is re-encoded from these latents with the current weights, as the AR inference rebuilds its context every
chunk, so no stale K/V crosses an optimizer step (upstream keeps the K/V cache itself); that also makes the
state small enough to checkpoint, so a resume continues the sequence exactly (upstream restarts it). A new
batch is drawn only when a sequence starts: at a stage change or when the sequence is complete.
A non-streaming stage runs plain self-forcing on its `num_latent_t` latents.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass

import torch

from worker.training.batches import Batch
from worker.training.self_forcing import Draws, Losses, Networks, SelfForcing
from worldplay_cli.contract.training import DistillStage, StreamingLongTuningMethod


def select_stage(stages: list[DistillStage], iteration: int) -> int:
    """The active stage: the last one started by `iteration` (the first before any has; the last after all)."""
    active = 0
    for index, stage in enumerate(stages):
        if stage.start_step <= iteration:
            active = index
    return active


@dataclass(frozen=True)
class WindowPlan:
    """One streaming iteration: new latents [new_start, new_start + new_frames), scored in the window of
    `window` latents ending with them, whose first `overlap` latents are history."""

    new_start: int
    new_frames: int
    window: int

    @property
    def overlap(self) -> int:
        return self.window - self.new_frames

    @property
    def window_start(self) -> int:
        return self.new_start + self.new_frames - self.window

    @property
    def mask(self) -> list[bool]:
        return [False] * self.overlap + [True] * self.new_frames


def plan_window(
    length: int,
    max_length: int,
    window: int,
    overlap: int | None,
    min_new: int | None,
    chunk: int,
    generator: torch.Generator,
) -> WindowPlan:
    """The next iteration of a sequence that has `length` of its `max_length` latents."""
    remaining = max_length - length
    if remaining <= 0:
        raise ValueError(f"the sequence is complete ({length} of {max_length} latents)")
    if length == 0:
        new = min(window, remaining)
        return WindowPlan(0, new, new)
    if overlap is not None:
        new = window - overlap
    else:
        choices = list(range(min_new, window, chunk))
        new = choices[int(torch.randint(0, len(choices), (1,), generator=generator))]
    return WindowPlan(length, min(new, remaining), window)


def batch_frames(batch: Batch, frames: slice, latents: torch.Tensor, image_cond: torch.Tensor | None) -> Batch:
    """The batch seen through a window of its latents (cameras and actions alike), holding `latents`."""
    return dataclasses.replace(
        batch,
        latents=latents,
        noise=batch.noise[:, :, frames],
        sigmas=batch.sigmas[:, frames],
        loss_mask=batch.loss_mask[:, frames],
        viewmats=batch.viewmats[:, frames],
        intrinsics=batch.intrinsics[:, frames],
        actions=batch.actions[:, frames],
        image_cond=batch.image_cond if image_cond is None else image_cond,
    )


@dataclass
class StreamState:
    stage: int
    reset_step: int  # the step whose batch the sequence streams
    length: int
    generated: torch.Tensor | None  # [B, C, length, h, w] detached
    batch: Batch | None = None  # drawn again from reset_step after a resume


class StreamingLongTuning(SelfForcing):
    name = "streaming_long_tuning"

    def __init__(self, config: StreamingLongTuningMethod, negative, seed: int, vae=None):
        super().__init__(config, negative, seed)
        self.config: StreamingLongTuningMethod = config
        self.stages = config.stages
        self.vae = vae
        self.states: dict[int, StreamState] = {}

    # -- checkpointed state -------------------------------------------------------------------------

    def state_dict(self) -> dict:
        return {
            slot: {
                "stage": state.stage,
                "reset_step": state.reset_step,
                "length": state.length,
                "generated": None if state.generated is None else state.generated.cpu(),
            }
            for slot, state in self.states.items()
        }

    def load_state_dict(self, state: dict) -> None:
        self.states = {slot: StreamState(**values) for slot, values in state.items()}

    # -- one iteration ------------------------------------------------------------------------------

    def losses(
        self,
        networks: Networks,
        draw: Callable[[int], Batch],
        step: int,
        slot: int,
        draws: Draws,
        update_student: bool,
    ) -> Losses:
        stage_index = select_stage(self.stages, step)
        stage = self.stages[stage_index]
        if not stage.streaming:
            self.states.pop(slot, None)
            batch = draw(step)
            frames = slice(0, stage.length)
            window = batch_frames(batch, frames, batch.latents[:, :, frames], None)
            return self.window_losses(networks, window, draws, update_student)
        state = self.states.get(slot)
        if state is None or state.stage != stage_index or state.length >= stage.length:
            state = self.states[slot] = StreamState(stage_index, step, 0, None)
        if state.batch is None:
            state.batch = draw(state.reset_step)
        window_size, overlap, min_new = self.config.window_settings(stage)
        plan = plan_window(
            state.length, stage.length, window_size, overlap, min_new, self.config.chunk_latents, draws.shared
        )
        student, teacher, critic = networks
        new = self.rollout(
            student,
            state.batch,
            draws,
            with_grad=update_student,
            start=plan.new_start,
            end=plan.new_start + plan.new_frames,
            history=state.generated,
        )
        window, window_batch = self.score_window(state, new, plan)
        mask = torch.tensor(plan.mask, device=new.device, dtype=torch.float32)[None].expand(new.shape[0], -1)
        generator_loss = None
        if update_student:
            generator_loss = self.generator_loss(window, teacher, critic, window_batch, draws.sample, mask)
        critic_loss = self.critic_loss(window, critic, window_batch, draws.sample, mask)
        new = new.detach()
        state.generated = new if state.generated is None else torch.cat([state.generated, new], dim=2)
        state.length += plan.new_frames
        return Losses(critic=critic_loss, generator=generator_loss, rollout=window.detach())

    def score_window(self, state: StreamState, new: torch.Tensor, plan: WindowPlan) -> tuple[torch.Tensor, Batch]:
        """The window the scores see ([B, C, window, h, w], gradients on the new latents) and its batch."""
        batch = state.batch
        frames = slice(plan.window_start, plan.window_start + plan.window)
        if plan.overlap == 0:
            return new, batch_frames(batch, frames, new, None)
        history = state.generated.detach()
        if not self.config.streaming_reencode_overlap_anchor:
            window = torch.cat([history[:, :, plan.window_start :], new], dim=2)
            return window, batch_frames(batch, frames, window, None)
        inject = self.config.streaming_anchor_inject_k
        # decoded from the window of latents before the new ones, as upstream decodes its previous latents
        decoded = slice(max(0, plan.new_start - plan.window), plan.window_start + inject)
        anchor = self.reencode_anchor(history[:, :, decoded], inject)
        window = torch.cat([anchor, history[:, :, plan.window_start + inject :], new], dim=2)
        return window, batch_frames(batch, frames, window, anchor[:, :, :1])

    @torch.no_grad()
    def reencode_anchor(self, latents: torch.Tensor, count: int) -> torch.Tensor:
        """The last 4(count−1)+1 frames decoded from `latents` (scaled), encoded again as `count` latents."""
        scaling = self.vae.config.scaling_factor
        with torch.autocast(latents.device.type, enabled=False):
            video = self.vae.decode(latents.float() / scaling)
            frames = video[:, :, -(4 * (count - 1) + 1) :]
            return self.vae.encode(frames).float() * scaling
