"""Chunk-by-chunk denoising loops of WorldPlay: the bidirectional rollout and the autoregressive one.

Both yield each chunk as soon as its last Euler step is done, so the caller can decode and write it while
the next chunk is denoised. Before every chunk but the first, the reconstituted context memory picks
≤ 20 already-denoised latents (`worker.pipeline.memory`); they are fed clean at timestep 14 with RoPE time
positions 0..n-1 and the chunk follows at n.. ("temporal reframing").

- `bi`: 16-latent chunks; every step runs one joint forward over [context ‖ chunk]; with guidance the
  batch is [uncond, cond] (one batched forward, as the official code does).
- AR (`ar`, `ar-rl`, `ar-distilled`): 4-latent chunks; the text K/V is computed once per video (text
  timestep 0), the context K/V is rebuilt from scratch for every chunk, then every step runs the chunk
  alone against [text, context]; with guidance each branch has its own caches and its own forward, as in
  the official code.

With `round_latents` the latents are stored in bf16 between steps (the Euler step itself is fp32): the
official pipeline keeps its latents in a bf16 buffer, and the rounding is needed for its numbers.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

import torch

from worker.models.scheduler import FlowMatchScheduler, classifier_free_guidance
from worker.models.transformer import AttentionWindow, KVCache, PromptEmbeddings, WorldPlayTransformer
from worker.pipeline.memory import select_context_latents

# The official stabilization level is 15; context frames are conditioned on timestep 15 - 1.
CONTEXT_TIMESTEP = 14.0
# The AR text stream is computed once, at timestep 0.
AR_TEXT_TIMESTEP = 0.0


@dataclass
class RolloutInputs:
    """Everything a rollout conditions on, for a video of T latents on an h×w latent grid (batch 1)."""

    noise: torch.Tensor  # [1, C, T, h, w] float32, the initial latents of the whole video
    cond: torch.Tensor  # [1, C + 1, T, h, w]: image latent on frame 0, zeros elsewhere | mask (1 on frame 0)
    viewmats: torch.Tensor  # [1, T, 4, 4] float32 world-to-camera
    intrinsics: torch.Tensor  # [1, T, 3, 3] float32 normalised K
    actions: torch.Tensor  # [1, T] int64 action ids
    w2c: torch.Tensor  # [T, 4, 4] float64, for memory selection
    prompts: list[PromptEmbeddings]  # batch 1 each: [negative, positive] with guidance, [positive] without
    points: torch.Tensor  # [M, 3] point cloud of the memory overlap test
    # AR: each branch's text K/V when the caller has it already (a resident pipeline's cache); else computed
    text_caches: list[KVCache] | None = None

    @property
    def num_latents(self) -> int:
        return self.noise.shape[2]

    @property
    def guided(self) -> bool:
        return len(self.prompts) == 2


@dataclass
class ChunkResult:
    index: int
    start: int  # first latent of the chunk
    end: int  # one past its last latent
    context: list[int]  # latents it was conditioned on
    latents: torch.Tensor  # [1, C, end - start, h, w] float32, denoised
    context_s: float = 0.0  # time of the AR context K/V pass
    denoise_s: float = 0.0  # time of the denoising steps
    step_times: list[float] = field(default_factory=list)


@dataclass(frozen=True)
class StepEvent:
    """One finished denoising step (`step` of `steps`) of chunk `chunk` (0-based) of `num_chunks`."""

    chunk: int
    num_chunks: int
    step: int
    steps: int


StepCallback = Callable[[StepEvent], None]


def _store(latents: torch.Tensor, round_latents: bool) -> torch.Tensor:
    return latents.to(torch.bfloat16).float() if round_latents else latents


def working_latents(noise: torch.Tensor, round_latents: bool) -> torch.Tensor:
    """The rollout's own buffer of the whole video: chunks are written back into it, so it must never be
    (or share storage with) the caller's noise, which `_store` returns unchanged for fp32 latents."""
    return _store(noise.to(torch.float32, copy=True), round_latents)


def _guide(predictions: list[torch.Tensor], guidance_scale: float) -> torch.Tensor:
    if len(predictions) == 1:
        return predictions[0]
    uncond, cond = predictions
    return classifier_free_guidance(uncond.float(), cond.float(), guidance_scale)


def bi_rollout(
    transformer: WorldPlayTransformer,
    scheduler: FlowMatchScheduler,
    inputs: RolloutInputs,
    guidance_scale: float,
    chunk_latents: int = 16,
    round_latents: bool = True,
    on_step: StepCallback | None = None,
) -> Iterator[ChunkResult]:
    latents = working_latents(inputs.noise, round_latents)
    num_chunks = inputs.num_latents // chunk_latents
    batch = len(inputs.prompts)
    prompt = inputs.prompts[0] if batch == 1 else stack_prompts(inputs.prompts)
    for index in range(num_chunks):
        started = time.perf_counter()
        start, end = index * chunk_latents, (index + 1) * chunk_latents
        # 1. context: clean latents chosen by the memory, then the chunk, with cameras and actions alike
        context = select_context_latents(inputs.w2c, start, chunk_latents, inputs.points)
        frames = context + list(range(start, end))
        num_context = len(context)
        viewmats = inputs.viewmats[:, frames].expand(batch, -1, -1, -1)
        intrinsics = inputs.intrinsics[:, frames].expand(batch, -1, -1, -1)
        actions = inputs.actions[:, frames].expand(batch, -1)
        # the official code takes the condition channels by sequence position; latent 0 (the image) is
        # always the first context frame, so this equals taking them by frame
        cond = inputs.cond[:, :, : num_context + chunk_latents]
        clean_context = latents[:, :, context]
        current = latents[:, :, start:end]
        result = ChunkResult(index, start, end, context, current)
        for step, timestep in enumerate(scheduler.timesteps):
            step_started = time.perf_counter()
            # 2. per-frame timesteps: context frames at 14, the chunk at t; the text stream at t
            frame_timesteps = torch.full((batch, num_context + chunk_latents), float(timestep))
            frame_timesteps[:, :num_context] = CONTEXT_TIMESTEP
            hidden = torch.cat([torch.cat([clean_context, current], dim=2), cond], dim=1).expand(batch, -1, -1, -1, -1)
            output = transformer.forward_bi(
                hidden, frame_timesteps, prompt, viewmats, intrinsics, actions, text_timestep=float(timestep)
            )
            # 3. guidance over the [uncond, cond] batch, Euler step on the chunk only
            velocity = _guide(list(output.float().split(1)), guidance_scale)[:, :, num_context:]
            current = _store(scheduler.step(velocity, step, current), round_latents)
            result.step_times.append(time.perf_counter() - step_started)
            if on_step is not None:
                on_step(StepEvent(index, num_chunks, step + 1, len(scheduler)))
        latents[:, :, start:end] = current
        result.latents = current
        result.denoise_s = time.perf_counter() - started
        yield result


def ar_rollout(
    transformer: WorldPlayTransformer,
    scheduler: FlowMatchScheduler,
    inputs: RolloutInputs,
    guidance_scale: float,
    chunk_latents: int = 4,
    round_latents: bool = True,
    on_step: StepCallback | None = None,
    attention_window: AttentionWindow | None = None,
) -> Iterator[ChunkResult]:
    """With an `attention_window` the context of every chunk is its sink and local window (bounded
    attention memory for any length) instead of the reconstituted memory."""
    latents = working_latents(inputs.noise, round_latents)
    num_chunks = inputs.num_latents // chunk_latents
    # 1. text K/V once per video and guidance branch
    text_caches = inputs.text_caches or [
        transformer.forward_text(prompt, AR_TEXT_TIMESTEP) for prompt in inputs.prompts
    ]

    def frames(indices: list[int] | slice) -> ARFrames:
        return ARFrames(
            latents[:, :, indices],
            inputs.cond[:, :, indices],
            inputs.viewmats[:, indices],
            inputs.intrinsics[:, indices],
            inputs.actions[:, indices],
        )

    for index in range(num_chunks):
        start, end = index * chunk_latents, (index + 1) * chunk_latents
        if attention_window is None:
            context = select_context_latents(inputs.w2c, start, chunk_latents, inputs.points)
        else:
            context = attention_window.context_latents(start, chunk_latents)
        result = ChunkResult(index, start, end, context, latents[:, :, start:end])
        report = None if on_step is None else _chunk_steps(on_step, index, num_chunks, len(scheduler))
        ar_chunk(
            transformer,
            scheduler,
            text_caches,
            frames(context) if context else None,
            frames(slice(start, end)),
            result,
            guidance_scale,
            round_latents,
            report,
        )
        latents[:, :, start:end] = result.latents
        yield result


@dataclass
class ARFrames:
    """Some latent frames of an AR video and what conditions each of them (batch 1, in time order)."""

    latents: torch.Tensor  # [1, C, n, h, w]: clean for context frames, the initial noise for a chunk
    cond: torch.Tensor  # [1, C + 1, n, h, w]: image latent | mask on latent 0, zeros elsewhere
    viewmats: torch.Tensor  # [1, n, 4, 4]
    intrinsics: torch.Tensor  # [1, n, 3, 3]
    actions: torch.Tensor  # [1, n]


def ar_chunk(
    transformer: WorldPlayTransformer,
    scheduler: FlowMatchScheduler,
    text_caches: list[KVCache],
    context: ARFrames | None,
    chunk: ARFrames,
    result: ChunkResult,
    guidance_scale: float,
    round_latents: bool = True,
    on_step: Callable[[int], None] | None = None,
) -> ChunkResult:
    """One AR chunk, the body of every autoregressive rollout (`ar_rollout`, `worker.pipeline.stream`):
    the context K/V rebuilt from the memory-selected clean latents (never appended to), then every step
    denoises the chunk alone against [text, context], one forward per guidance branch (`text_caches`).
    Fills `result.latents` (denoised), its timings, and calls `on_step(step)` (1-based) after each step."""
    started = time.perf_counter()
    if context is not None:
        hidden = torch.cat([context.latents, context.cond], dim=1)
        caches = [
            transformer.forward_context(
                hidden, context.viewmats, context.intrinsics, context.actions, cache, CONTEXT_TIMESTEP
            )
            for cache in text_caches
        ]
    else:
        caches = [cache.without_context() for cache in text_caches]
    context_done = time.perf_counter()
    result.context_s = context_done - started
    # the condition channels are taken by frame
    current = chunk.latents
    for step, timestep in enumerate(scheduler.timesteps):
        step_started = time.perf_counter()
        hidden = torch.cat([current, chunk.cond], dim=1)
        predictions = [
            transformer.forward_chunk(
                hidden, float(timestep), chunk.viewmats, chunk.intrinsics, chunk.actions, cache
            ).float()
            for cache in caches
        ]
        current = _store(scheduler.step(_guide(predictions, guidance_scale), step, current), round_latents)
        result.step_times.append(time.perf_counter() - step_started)
        if on_step is not None:
            on_step(step + 1)
    result.latents = current
    result.denoise_s = time.perf_counter() - context_done
    return result


def _chunk_steps(on_step: StepCallback, chunk: int, num_chunks: int, steps: int) -> Callable[[int], None]:
    return lambda step: on_step(StepEvent(chunk, num_chunks, step, steps))


def stack_prompts(prompts: list[PromptEmbeddings]) -> PromptEmbeddings:
    """Batch-1 prompt embeddings -> one batch, in order."""

    def cat(name: str):
        values = [getattr(prompt, name) for prompt in prompts]
        return None if values[0] is None else torch.cat(values)

    return PromptEmbeddings(cat("llm"), cat("llm_mask"), cat("byt5"), cat("byt5_mask"), cat("vision"))
