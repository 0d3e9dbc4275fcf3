"""The autoregressive rollout of the WAN-5B WorldPlay family: 4-latent chunks with reconstituted memory.

For every chunk: the context latents (`worker.pipeline.memory.select_wan_context_latents`: every earlier
latent until 16 exist, then the 12 most recent plus the best-overlapping 4-latent clip) are run clean at
timestep 14 in one pass that rebuilds the KV cache from scratch at RoPE time 0..n-1; then every step runs
the chunk alone at RoPE time n..n+3 against [cache, itself] and takes a plain Euler step with σ = t/1000.
The released (distilled) schedule is 4 steps on fixed timesteps, no guidance.

i2v: latent 0 is the image's VAE posterior sample (normalised); in chunk 0 it sits clean at timestep 14
beside latents 1-3, which alone are updated; afterwards it is ordinary context. t2v: every latent is
generated from noise.

Latents live in the transformer's dtype between steps, and the Euler step runs in it too, as the official
pipeline keeps them (its bf16 buffer); cameras are rounded to that dtype before they reach the model.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence

import torch

from worker.models.wan.transformer import WanConfig, WanTextContext, WanWorldPlayTransformer
from worker.pipeline.memory import sample_points_in_sphere, select_wan_context_latents
from worker.pipeline.rollout import CONTEXT_TIMESTEP, ChunkResult, StepCallback, StepEvent

CHUNK_LATENTS = 4
# The distilled checkpoint's timesteps as the official pipeline hard-codes them: shift 8 applied to
# σ = 1, .75, .5, .25 (8σ / (1 + 7σ)), times 1000, rounded to four decimals. The rounded numbers are the
# fact (727.2728 is not the fp32 value of the formula), so they are kept, not recomputed.
DISTILLED_TIMESTEPS = (1000.0, 960.0, 888.8889, 727.2728, 0.0)
NUM_TRAIN_TIMESTEPS = 1000.0


def wan_ar_rollout(
    transformer: WanWorldPlayTransformer,
    *,
    text_states: torch.Tensor,
    num_latents: int,
    height_latents: int,
    width_latents: int,
    viewmats: torch.Tensor,
    intrinsics: torch.Tensor,
    action_ids: torch.Tensor,
    first_latent: torch.Tensor | None,
    generator: torch.Generator,
    steps: Sequence[float] | None = None,
    noise: torch.Tensor | None = None,
    on_chunk: Callable[[ChunkResult], None] | None = None,
    on_step: StepCallback | None = None,
) -> torch.Tensor:
    """Generate `num_latents` latents (a multiple of 4) on an h×w latent grid; returns [1, C, N, h, w] fp32.

    text_states [1, L, text_dim]: the UMT5 states (512 rows, padding rows zero). viewmats [N, 4, 4]
    world-to-camera, intrinsics [N, 3, 3] normalised, action_ids [N] (0..80), one per latent.
    first_latent [1, C, 1, h, w]: the normalised posterior sample of the image (i2v), or None (t2v).
    The noise of the whole video is drawn first, [1, C, N, h, w] fp32 from `generator`, unless `noise` of
    that shape is given (a live stream's chunk-by-chunk noise, to replay it). `steps`: the timesteps, from
    the first (noisiest) to the final 0 (default `DISTILLED_TIMESTEPS`). `on_step(event)` follows every
    denoising step (so progress, and a cancel raised from it, need not wait for the chunk); `on_chunk(chunk)`
    each finished chunk: its latents [1, C, 4, h, w] fp32, the context latents it was conditioned on and its
    timings.
    """
    config = transformer.config
    timesteps = check_steps(DISTILLED_TIMESTEPS if steps is None else steps)
    check_inputs(
        config, text_states, num_latents, height_latents, width_latents, viewmats, intrinsics, action_ids, first_latent
    )
    device, dtype = transformer.device, transformer.dtype
    shape = (1, config.in_channels, num_latents, height_latents, width_latents)
    if noise is None:
        noise = torch.randn(shape, generator=generator, dtype=torch.float32, device=generator.device)
    elif tuple(noise.shape) != shape:
        raise ValueError(f"noise must be {list(shape)}, got {list(noise.shape)}")
    latents = noise.to(device=device, dtype=dtype)
    if first_latent is not None:
        latents[:, :, :1] = first_latent.to(device=device, dtype=dtype)
    text = transformer.encode_text(text_states)
    cameras, lenses, actions = model_inputs(transformer, viewmats, intrinsics, action_ids)
    w2c = viewmats.detach().float().cpu()
    points = sample_points_in_sphere()
    num_chunks, num_steps = num_latents // CHUNK_LATENTS, len(timesteps) - 1
    for index in range(num_chunks):
        report = None
        if on_step is not None:

            def report(step: int, index: int = index) -> None:
                on_step(StepEvent(index, num_chunks, step, num_steps))

        chunk = wan_chunk(
            transformer,
            index,
            latents,
            text,
            (cameras, lenses, actions),
            w2c,
            points,
            timesteps,
            keep_first=index == 0 and first_latent is not None,
            on_step=report,
        )
        if on_chunk is not None:
            on_chunk(chunk)
    return latents.float()


def model_inputs(
    transformer: WanWorldPlayTransformer, viewmats: torch.Tensor, intrinsics: torch.Tensor, action_ids: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Per-latent cameras as the model takes them: viewmats [1, N, 4, 4] and intrinsics [1, N, 3, 3] rounded
    to its dtype (then fp32), action ids [1, N] int64, on its device."""
    device, dtype = transformer.device, transformer.dtype
    cameras = viewmats.to(dtype).float()[None].to(device)
    lenses = intrinsics.to(dtype).float()[None].to(device)
    return cameras, lenses, action_ids.long()[None].to(device)


def wan_chunk(
    transformer: WanWorldPlayTransformer,
    index: int,
    latents: torch.Tensor,
    text: WanTextContext,
    cameras: tuple[torch.Tensor, torch.Tensor, torch.Tensor],
    w2c: torch.Tensor,
    points: torch.Tensor,
    timesteps: torch.Tensor,
    *,
    keep_first: bool,
    on_step: Callable[[int], None] | None = None,
) -> ChunkResult:
    """Denoise chunk `index` (latents [4·index, 4·index + 4)) in place: the one chunk body of the batch
    rollout and the live stream (`worker.pipeline.wan_stream`).

    `latents` [1, C, ≥ end, h, w] in the model's dtype: the clean latents before the chunk, then its
    initial latents (i2v chunk 0: the image latent first, kept clean when `keep_first`). `cameras`: the
    `model_inputs` of at least the latents up to the chunk's end, `w2c` [≥ end, 4, 4] what the memory
    selects by, `points` its seeded cloud, `timesteps` fp32 down to 0 (`check_steps`). `on_step(step)`
    (1-based) follows every step. Returns the chunk with its latents in fp32, its context and timings.
    """
    started = time.perf_counter()
    device = transformer.device
    start, end = index * CHUNK_LATENTS, (index + 1) * CHUNK_LATENTS
    viewmats, intrinsics, actions = cameras
    # 1. the context KV cache, rebuilt from the memory-selected clean latents
    context = select_wan_context_latents(w2c[:end], start, points)
    cache = None
    if context:
        cache = transformer.forward_context(
            latents[:, :, context],
            CONTEXT_TIMESTEP,
            text,
            viewmats[:, context],
            intrinsics[:, context],
            actions[:, context],
        )
    context_s = time.perf_counter() - started
    # 2. the chunk's Euler steps; the image latent of chunk 0 (i2v) stays clean at the context timestep
    sigmas = timesteps / NUM_TRAIN_TIMESTEPS
    current = latents[:, :, start:end].clone()
    frame_timesteps = torch.empty(1, CHUNK_LATENTS, device=device)
    step_times = []
    for step in range(len(timesteps) - 1):
        step_started = time.perf_counter()
        frame_timesteps.fill_(timesteps[step].item())
        if keep_first:
            frame_timesteps[:, 0] = CONTEXT_TIMESTEP
        velocity = transformer.forward_chunk(
            current,
            frame_timesteps,
            text,
            viewmats[:, start:end],
            intrinsics[:, start:end],
            actions[:, start:end],
            cache,
        )
        # a 0-d fp32 step times latents of the model's dtype stays in that dtype (the official update)
        updated = current + (sigmas[step + 1] - sigmas[step]).to(device) * velocity
        if keep_first:
            current[:, :, 1:] = updated[:, :, 1:]
        else:
            current = updated
        step_times.append(time.perf_counter() - step_started)
        if on_step is not None:
            on_step(step + 1)
    latents[:, :, start:end] = current
    denoise_s = time.perf_counter() - started - context_s
    return ChunkResult(index, start, end, context, current.float(), context_s, denoise_s, step_times)


def check_steps(steps: Sequence[float]) -> torch.Tensor:
    """The timesteps as fp32 [n + 1]: strictly decreasing, within (0, 1000] until the final 0."""
    timesteps = torch.tensor([float(step) for step in steps], dtype=torch.float32)
    if timesteps.ndim != 1 or len(timesteps) < 2 or timesteps[-1] != 0:
        raise ValueError(f"steps must list the timesteps down to a final 0, got {list(steps)}")
    if not bool((timesteps[:-1] > timesteps[1:]).all()) or timesteps[0] > NUM_TRAIN_TIMESTEPS:
        raise ValueError(f"steps must decrease strictly from at most {NUM_TRAIN_TIMESTEPS:g} to 0, got {list(steps)}")
    return timesteps


def check_inputs(
    config: WanConfig,
    text_states: torch.Tensor,
    num_latents: int,
    height_latents: int,
    width_latents: int,
    viewmats: torch.Tensor,
    intrinsics: torch.Tensor,
    action_ids: torch.Tensor,
    first_latent: torch.Tensor | None,
) -> None:
    """Refuse what the model cannot run: a latent count off the 4-latent chunks, a grid off its 2x2 patches
    (pixel sizes off multiples of 32), tensors whose shapes disagree."""
    if isinstance(num_latents, bool) or not isinstance(num_latents, int) or num_latents < CHUNK_LATENTS:
        raise ValueError(f"num_latents must be a positive multiple of {CHUNK_LATENTS}, got {num_latents!r}")
    if num_latents % CHUNK_LATENTS:
        raise ValueError(f"num_latents {num_latents} is not a multiple of the {CHUNK_LATENTS}-latent chunk")
    _, patch_h, patch_w = config.patch_size
    if height_latents < patch_h or width_latents < patch_w or height_latents % patch_h or width_latents % patch_w:
        raise ValueError(
            f"latent grid {height_latents}x{width_latents} must be a positive multiple of the {patch_h}x{patch_w} "
            "patch (pixel sizes multiples of 32)"
        )
    if text_states.ndim != 3 or text_states.shape[0] != 1 or text_states.shape[2] != config.text_dim:
        raise ValueError(f"text_states must be [1, L, {config.text_dim}], got {list(text_states.shape)}")
    expected = {
        "viewmats": (viewmats, (num_latents, 4, 4)),
        "intrinsics": (intrinsics, (num_latents, 3, 3)),
        "action_ids": (action_ids, (num_latents,)),
    }
    if first_latent is not None:
        expected["first_latent"] = (first_latent, (1, config.in_channels, 1, height_latents, width_latents))
    for name, (tensor, shape) in expected.items():
        if tuple(tensor.shape) != shape:
            raise ValueError(f"{name} must be {list(shape)}, got {list(tensor.shape)}")
