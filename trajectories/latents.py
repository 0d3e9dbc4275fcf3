"""Latent/frame arithmetic and which latent counts each model variant accepts.

The VAE compresses time 4x causally: latent 0 is one pixel frame, every later latent four, so
`frames = 4 * (latents - 1) + 1`. The autoregressive variants denoise 4 latents per chunk and the
official script asserts `latents % 4 == 0`; the bidirectional model denoises 16 per chunk and any
remainder would silently decode as noise, so we require `latents % 16 == 0` for it.
"""

from __future__ import annotations

from trajectories.errors import TrajectoryError

# The released models' chunk sizes: the one table of them (`worldplay_cli.contract.variants` reads it). A variant
# registered there adds its own through `register_model`, so validation in that process knows it too.
CHUNK = {"ar": 4, "ar-rl": 4, "ar-distilled": 4, "bi": 16, "wan-distilled": 4, "wan-ar": 4}
MODELS = tuple(CHUNK)  # the released ones
_REGISTERED: set[str] = set()


def register_model(model: str, chunk: int) -> None:
    """Make `model` (with `chunk` latents per chunk) known to the validators; see `unregister_model`."""
    if model in CHUNK:
        raise ValueError(f"model {model!r} is already known")
    CHUNK[model] = chunk
    _REGISTERED.add(model)


def unregister_model(model: str) -> None:
    """Forget a model added by `register_model` (the released ones stay)."""
    _REGISTERED.remove(model)
    del CHUNK[model]


def chunk_size(model: str) -> int:
    """Latents per denoising chunk of `model`; a TrajectoryError names the valid models otherwise."""
    try:
        return CHUNK[model]
    except (KeyError, TypeError):
        raise TrajectoryError(f"unknown model {model!r}", f"use one of: {', '.join(CHUNK)}") from None


def latents_to_frames(latents: int) -> int:
    """Pixel frames decoded from `latents` latents (latents >= 1)."""
    if isinstance(latents, bool) or not isinstance(latents, int) or latents < 1:
        raise TrajectoryError(
            f"latent count must be a positive whole number, got {latents!r}", "e.g. 32 latents (125 frames)"
        )
    return 4 * (latents - 1) + 1


def frames_to_latents(frames: int) -> int:
    """Latents needed for `frames` pixel frames; `frames` must be 1, 5, 9, ... (4k + 1).

    The official script floors other values ((frames - 1) // 4 + 1) and then decodes fewer frames than
    asked for; we refuse instead and name the two nearest valid counts.
    """
    if isinstance(frames, bool) or not isinstance(frames, int) or frames < 1:
        raise TrajectoryError(
            f"frame count must be a positive whole number, got {frames!r}", "frames are 4k+1, e.g. 125"
        )
    if (frames - 1) % 4:
        below = frames - (frames - 1) % 4
        raise TrajectoryError(
            f"{frames} frames is not 4k+1 (the VAE decodes 1 frame for the first latent, 4 for every other)",
            f"use {below} or {below + 4} frames",
        )
    return (frames - 1) // 4 + 1


def valid_latents(model: str, latents: int) -> bool:
    """Whether `model` can generate exactly `latents` latents."""
    chunk = chunk_size(model)
    return isinstance(latents, int) and latents >= chunk and latents % chunk == 0


def nearest_valid_latents(model: str, latents: int) -> tuple[int | None, int]:
    """(largest valid count <= latents or None if there is none, smallest valid count >= latents)."""
    chunk = chunk_size(model)
    below = (latents // chunk) * chunk
    above = -(-latents // chunk) * chunk
    return (below if below >= chunk else None), max(above, chunk)
