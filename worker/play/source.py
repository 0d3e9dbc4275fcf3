"""What a live session asks of an engine: one chunk of frames at a time, along poses decided as it plays.

The session (`worker.play.session`) owns everything around the engine: the streams to the player, the
poses and action ids made from the held keys, the prompt timeline, the outputs. A `ChunkSource` only turns
the next chunk's cameras, actions and prompt into frames, keeping whatever it needs between chunks (the
preview engine its reprojection, the native engine an open-ended AR rollout with its caches and memory in
the resident rank group).

Conventions (those of `trajectories` and the official JSON): `c2w` are camera-to-world matrices in OpenCV
axes with latent 0 at the identity; `intrinsics` are normalised (first row / width, second / height);
action ids are the 81 classes of `trajectories.actions`. Chunk k covers latents
[k * chunk_latents, (k + 1) * chunk_latents); chunk 0's first latent is the input image (a text-to-video
session, without one, generates it).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    import numpy as np

    from worker.progress import Reporter
    from worldplay_cli.contract.play import PlaySpec


@dataclass(frozen=True)
class SourceInfo:
    """What opening a source cost, for `Ready` and the manifest."""

    load_s: float = 0.0
    reused_weights: bool = False
    info: dict = field(default_factory=dict)  # engine facts for the manifest (model dir, profile, ...)


@dataclass(frozen=True)
class ChunkFrames:
    frames: (
        np.ndarray
    )  # [num_frames, height, width, 3] uint8: 4 * chunk_latents - 3 for chunk 0, else 4 * chunk_latents
    context: list[int] = field(default_factory=list)  # latents the memory conditioned the chunk on (native)
    generate_s: float = 0.0


class ChunkSource(Protocol):
    def open(self, spec: PlaySpec, image_path: Path | None, work_dir: Path, reporter: Reporter) -> SourceInfo:
        """Load what the session needs (weights stay resident where the engine keeps them). `image_path` is
        None for a text-to-video session (`PlaySpec.image` None: never the preview engine)."""

    def generate(
        self, chunk: int, c2w: np.ndarray, intrinsics: np.ndarray, actions: np.ndarray, prompt: str
    ) -> ChunkFrames:
        """The frames of chunk `chunk` (chunks come in order, each exactly once). `c2w` [chunk_latents, 4, 4]
        float64, `intrinsics` [chunk_latents, 3, 3] float64 normalised, `actions` [chunk_latents] int64 are
        the chunk's own latents; `prompt` may differ from the previous chunk's (a prompt change)."""

    def close(self) -> None:
        """Release the session's state (never the resident weights); called once, however the session ends."""
