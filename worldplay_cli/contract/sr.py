"""The 720p super-resolution stage (`generate --sr`): its recipe and what it can serve, for the CLI (which
refuses a request before anything is queued) and the worker (which runs the recipe).

The official stage (HunyuanVideo-1.5's `720p_sr_distilled` transformer, driven through its SR block path,
plus the `SRTo720pUpsampler` latent upsampler) takes the finished 480p latents, resizes them bilinearly to
the 720p bucket (`contract.buckets.super_resolution_size`), runs the upsampler, mixes in noise at strength
0.7 and denoises 6 steps at shift 2.0 without CFG; the noisy low-resolution latents condition the steps
whose timestep is at least 1000 x strength and are zeroed after. Torch-free.
"""

from __future__ import annotations

from trajectories.latents import latents_to_frames
from worldplay_cli.contract import variants
from worldplay_cli.contract.buckets import super_resolution_size

STEPS = 6
SHIFT = 2.0
STRENGTH = 0.7
# The release enables SR for 125-frame videos (32 latents, its run.sh); one bidirectional pass of the SR
# transformer over every latent of a longer video outgrows the memory the stage was sized for.
MAX_LATENTS = 32
# `worldplay download` bundle with the SR transformer and the upsampler.
DOWNLOAD_PIECE = "sr"


def output_size(width: int, height: int) -> tuple[int, int] | None:
    """(width, height) of the SR video for a 480p generation size; None when the stage cannot map it."""
    return super_resolution_size(width, height)


def unsupported(variant: str, num_latents: int, width: int, height: int) -> tuple[str, str] | None:
    """Why `--sr` cannot serve this request, as (message, hint naming what would work); None if it can."""
    record = variants.get(variant)
    if not record.super_resolution:
        able = [other.name for other in variants.all_variants() if other.super_resolution]
        return (
            f"variant {variant} cannot feed the 720p super-resolution stage",
            f"use --variant {' or '.join(able)} with --sr, or drop --sr" if able else "drop --sr",
        )
    if num_latents > MAX_LATENTS:
        longest = MAX_LATENTS - MAX_LATENTS % record.chunk_latents
        return (
            f"--sr handles up to {latents_to_frames(MAX_LATENTS)} frames ({MAX_LATENTS} latents); this video has "
            f"{latents_to_frames(num_latents)} frames ({num_latents} latents)",
            f"use a trajectory of at most {latents_to_frames(longest)} frames ({longest} latents) with --sr, "
            "or drop --sr",
        )
    if output_size(width, height) is None:
        return (
            f"--sr needs a 480p bucket size and {width}x{height} is not one",
            "drop --width/--height (the image's own bucket is used), pick a bucket such as 848x480 or 832x480, "
            "or drop --sr",
        )
    return None
