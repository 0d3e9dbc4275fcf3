"""Memory profiles: where the model's parts live on the GPU, chosen by name instead of raw flags.

    resident       everything stays on the GPU between stages and jobs (fastest; most memory)
    offload        the condition encoders (18 GB, used once per job) visit the GPU only for the encode
                   stage; the transformer and VAE stay
    group-offload  as offload, and the transformer's blocks are streamed: one block on the GPU at a time
    low-vram       as group-offload, and the VAE decodes in spatial tiles
    auto           the first of the above whose estimated peak fits the GPUs of the job

With `--sr` the 720p super-resolution stage follows: its own 8.3B transformer and a bidirectional pass over
every 720p latent of the video. While it runs, the 480p transformer's blocks (nearly all of its weights) wait
in host memory unless the profile is `resident`, and under the streamed profiles the SR transformer's
blocks are streamed too.

Peak estimates are for the released models in bf16, from each family's figures in its record
(`contract.variants.Family.memory`): the HunyuanVideo ones are calibrated to the official README figures
(AR distilled, 125 frames: 72 GB at sp=1, 34 GB at sp=4, 28 GB at sp=8, offloading on), the WAN ones are
computed estimates; a smaller model (a tiny one) scales them by its parameter count against its family's. They decide `auto` and the doctor's recommendation;
measured peaks per stage go into the manifest. An OOM is retried once, in fresh processes, one profile
further down the ladder.

This module imports no torch at import time (the doctor and the runtime's supervisor use it).
"""

from __future__ import annotations

import resource
import sys
from dataclasses import dataclass, field
from typing import Literal

from worldplay_cli.contract import variants

GB = 10**9

PROFILES = ("auto", "resident", "offload", "group-offload", "low-vram")
LADDER = ("resident", "offload", "group-offload", "low-vram")
ProfileName = Literal["auto", "resident", "offload", "group-offload", "low-vram"]

# --- estimates, bytes per GPU (released models) -------------------------------------------------------
# Each family's figures are its record's `memory` (contract.variants); the HunyuanVideo ones are named here
# too. Its denoising working set on top of the weights is fitted to the README figures: the context K/V of
# the 20-latent memory is 27.6 GB per guidance branch and splits over sp; activations are 4.7 + 22.3/sp GB.
_HUNYUAN = variants.FAMILIES["hunyuan"].memory
RELEASED_TRANSFORMER_PARAMS = _HUNYUAN.transformer_params
# The SR stage (estimates, not calibrated against a run): the SR transformer (the 480p one without the
# action parameters, with 98 input channels and the meanflow embedder) in bf16, the working set of one
# bidirectional pass over 32 latents of 45 x 80 tokens (activations of a block, flash attention), the
# 720p image condition encode, and a tiled 720p decode.
RELEASED_SR_TRANSFORMER_PARAMS = 8_331_398_432  # counted on the meta device from the SR config
SR_TRANSFORMER_BYTES = RELEASED_SR_TRANSFORMER_PARAMS * 2
SR_ACTIVATION_BYTES = int(6.5 * GB)
SR_DECODE_BYTES = _HUNYUAN.vae_tiled_decode_bytes
# Leave room for the allocator's fragmentation and the CUDA context.
USABLE_FRACTION = 0.92


@dataclass(frozen=True)
class ProfilePolicy:
    """What a profile does to the model's placement."""

    name: str
    encoders_resident: bool  # False: moved to the GPU for the encode stage only
    transformer_streamed: bool  # True: one block on the GPU at a time
    vae_tiled: bool


POLICIES: dict[str, ProfilePolicy] = {
    "resident": ProfilePolicy("resident", encoders_resident=True, transformer_streamed=False, vae_tiled=False),
    "offload": ProfilePolicy("offload", encoders_resident=False, transformer_streamed=False, vae_tiled=False),
    "group-offload": ProfilePolicy(
        "group-offload", encoders_resident=False, transformer_streamed=True, vae_tiled=False
    ),
    "low-vram": ProfilePolicy("low-vram", encoders_resident=False, transformer_streamed=True, vae_tiled=True),
}


class ProfileError(ValueError):
    pass


def guidance_branches(variant: str) -> int:
    """Separate CFG passes with their own context caches: two except for a variant run without CFG."""
    return variants.get(variant).cfg_branches


def estimate_stages(profile: str, variant: str, sp: int, scale: float = 1.0, sr: bool = False) -> dict[str, int]:
    """Estimated peak bytes per GPU of each stage (encode, denoise, decode, and with `sr` the SR stage and
    its decode) under `profile`."""
    policy = POLICIES[profile]
    memory = variants.get(variant).family.memory
    transformer = memory.streamed_transformer_bytes if policy.transformer_streamed else memory.transformer_bytes
    decode = memory.vae_tiled_decode_bytes if policy.vae_tiled else memory.vae_decode_bytes
    working = (
        guidance_branches(variant) * memory.context_kv_bytes // sp
        + memory.activation_fixed_bytes
        + memory.activation_split_bytes // sp
    )
    # the encoders leave the GPU after the encode stage unless resident
    encoders_later = memory.encoder_bytes if policy.encoders_resident else 0
    vae = memory.vae_bytes
    stages = {
        "encode": memory.encoder_bytes + vae + transformer,
        "denoise": transformer + working + vae + encoders_later,
        "decode": transformer + vae + decode + encoders_later,
    }
    if sr:
        # the SR pass is not split over ranks; the 480p transformer stays only when resident
        sr_transformer = memory.streamed_transformer_bytes if policy.transformer_streamed else SR_TRANSFORMER_BYTES
        beside = transformer + encoders_later if profile == "resident" else 0
        stages["super-resolution"] = sr_transformer + SR_ACTIVATION_BYTES + vae + beside
        stages["sr_decode"] = sr_transformer + vae + SR_DECODE_BYTES + beside
    return {stage: int(value * scale) for stage, value in stages.items()}


def estimate_peak(profile: str, variant: str, sp: int, scale: float = 1.0, sr: bool = False) -> int:
    return max(estimate_stages(profile, variant, sp, scale, sr).values())


@dataclass(frozen=True)
class ProfileChoice:
    profile: str
    requested: str
    estimated_peak_bytes: int | None
    fits: bool
    reason: str


def choose_profile(
    requested: str,
    variant: str,
    sp: int,
    gpu_memory_bytes: int | None,
    scale: float = 1.0,
    sr: bool = False,
) -> ProfileChoice:
    """Resolve `auto` (or check a named profile) for GPUs of `gpu_memory_bytes` each (None: no GPU), for jobs
    with the SR stage when `sr`."""
    if requested not in PROFILES:
        raise ProfileError(f"unknown memory profile {requested!r}; choose one of {', '.join(PROFILES)}")
    if gpu_memory_bytes is None:
        profile = "resident" if requested == "auto" else requested
        return ProfileChoice(profile, requested, None, True, "no GPU: everything stays in host memory")
    budget = gpu_memory_bytes * USABLE_FRACTION
    if requested != "auto":
        peak = estimate_peak(requested, variant, sp, scale, sr)
        return ProfileChoice(requested, requested, peak, peak <= budget, "requested")
    for profile in LADDER:
        peak = estimate_peak(profile, variant, sp, scale, sr)
        if peak <= budget:
            return ProfileChoice(
                profile, requested, peak, True, f"estimated peak {peak / GB:.1f} GB fits {gpu_memory_bytes / GB:.0f} GB"
            )
    peak = estimate_peak(LADDER[-1], variant, sp, scale, sr)
    return ProfileChoice(
        LADDER[-1], requested, peak, False,
        f"even low-vram needs about {peak / GB:.1f} GB per GPU at sp={sp}; more GPUs per job split the context",
    )  # fmt: skip


def requested_profile(spec, settings) -> str:
    """The job's memory profile, else the worker's `memory_profile` setting (default `auto`)."""
    return spec.memory_profile or settings.memory_profile


def next_profile(profile: str) -> str | None:
    """The next rung of the OOM ladder, or None at the bottom."""
    index = LADDER.index(profile)
    return LADDER[index + 1] if index + 1 < len(LADDER) else None


def oom_hint(profile: str, sp: int, gpu_count: int) -> str:
    hints = []
    following = next_profile(profile)
    if following:
        hints.append(f"the {following} memory profile")
    if sp < gpu_count:
        hints.append("more GPUs per job (sequence parallel splits the context cache)")
    hints.append("fewer frames")
    return "try " + ", or ".join(hints)


def is_out_of_memory(error: BaseException) -> bool:
    """CUDA OOM (any torch version), cuBLAS allocation failure, or host MemoryError."""
    if isinstance(error, MemoryError) or type(error).__name__ == "OutOfMemoryError":
        return True
    text = str(error)
    return isinstance(error, RuntimeError) and ("CUDA out of memory" in text or "CUBLAS_STATUS_ALLOC_FAILED" in text)


# --- measured peaks ----------------------------------------------------------------------------------


@dataclass
class PeakMemory:
    """Peak memory of each stage: CUDA allocator peak on a GPU, else the process's peak RSS so far."""

    device_type: str
    stages: dict[str, int] = field(default_factory=dict)
    _current: str | None = None

    def start(self, stage: str) -> None:
        self.stop()
        self._current = stage
        if self.device_type == "cuda":
            import torch

            torch.cuda.reset_peak_memory_stats()

    def stop(self) -> None:
        if self._current is None:
            return
        self.stages[self._current] = max(self.stages.get(self._current, 0), self._peak())
        self._current = None

    def _peak(self) -> int:
        if self.device_type == "cuda":
            import torch

            return int(torch.cuda.max_memory_allocated())
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        return peak if sys.platform == "darwin" else peak * 1024


# --- placement ---------------------------------------------------------------------------------------


class BlockStreamer:
    """Keeps one block of a ModuleList on the device: a block's parameters move there when any of its
    layers is called (forward pre-hooks on its leaf modules) and the previous block goes back to host memory.

    Hooks sit on leaves because the HunyuanVideo transformer calls block methods, not `block.forward`; one
    sits on each block as well, because the WAN transformer calls its blocks and reads a block's own
    parameter (its modulation table) before any of its layers.
    """

    def __init__(self, blocks, device):
        self.blocks = blocks
        self.device = device
        self.current: int | None = None
        self.fetches = 0
        for index, block in enumerate(blocks):
            block.to("cpu")
            for module in block.modules():
                if module is block or not any(True for _ in module.children()):
                    module.register_forward_pre_hook(lambda module, args, index=index: self.fetch(index))

    def fetch(self, index: int) -> None:
        if self.current == index:
            return
        if self.current is not None:
            self.blocks[self.current].to("cpu")
        self.blocks[index].to(self.device)
        self.current = index
        self.fetches += 1


class Placement:
    """Applies a profile to a loaded pipeline and moves its parts between stages (`on_stage`); the pipeline
    (of any family) names the parts: `offloadable_encoders()` and `transformer_blocks()`."""

    def __init__(self, pipeline, policy: ProfilePolicy, device):
        self.pipeline = pipeline
        self.policy = policy
        self.device = device
        self.streamer: BlockStreamer | None = None
        self.sr_streamer: BlockStreamer | None = None
        self.parked = False  # the 480p transformer's blocks wait in host memory while the SR stage runs
        if not policy.encoders_resident:
            self._move_encoders("cpu")
        if policy.transformer_streamed:
            self.streamer = BlockStreamer(pipeline.transformer_blocks(), device)

    @property
    def tiling(self):
        if not self.policy.vae_tiled:
            return None
        from worker.models.vae import SpatialTiling

        return SpatialTiling()

    def on_stage(self, stage: str) -> None:
        if stage == "super-resolution":
            self._enter_super_resolution()
        elif stage in ("encode", "generate") and self.parked:
            self._move_main_blocks(self.device)
        if self.policy.encoders_resident:
            return
        if stage == "encode":
            self._move_encoders(self.device)
        elif stage == "generate":
            self._move_encoders("cpu")

    def _enter_super_resolution(self) -> None:
        """Load the SR stage on first use; below `resident` make room for it first: the 480p transformer's
        blocks go to host memory until the next job's stages (its embedders stay, so the pipeline's device
        does not change), and streamed profiles stream the SR blocks as well (the 480p ones already are)."""
        if self.policy.name != "resident" and not self.policy.transformer_streamed:
            self._move_main_blocks("cpu")
        stage = self.pipeline.super_resolution_stage()
        if self.policy.transformer_streamed and self.sr_streamer is None:
            self.sr_streamer = BlockStreamer(stage.transformer.double_blocks, self.device)

    def _move_main_blocks(self, device) -> None:
        import torch

        self.pipeline.transformer_blocks().to(device)
        self.parked = torch.device(device).type == "cpu" and torch.device(self.device).type != "cpu"
        if self.parked and torch.cuda.is_available():
            torch.cuda.empty_cache()

    def _move_encoders(self, device) -> None:
        import torch

        for model in self.pipeline.offloadable_encoders():
            model.to(device)
        if torch.device(device).type == "cpu" and torch.cuda.is_available():
            torch.cuda.empty_cache()
