"""Size limits on trajectories, checked before anything is allocated.

A trajectory is one pose per latent; 2048 latents is 8189 frames, minutes of video, far beyond what any
released model makes in one job. A pose string's length is known from its segment counts before a matrix
is built, a file's size before it is read, its number of latents before its poses are converted. The CLI
sets these from the `limits.*` settings (`worldplay_cli.contract.settings`); the defaults apply everywhere else.
"""

from __future__ import annotations

from trajectories.errors import TrajectoryError

DEFAULT_MAX_LATENTS = 2048
DEFAULT_MAX_FILE_BYTES = 16 * 1024 * 1024

MAX_LATENTS = DEFAULT_MAX_LATENTS
MAX_FILE_BYTES = DEFAULT_MAX_FILE_BYTES

LIMIT_HINT = "set limits.max_latents (worldplay config set limits.max_latents N) to allow longer trajectories"


def configure(max_latents: int | None = None, max_file_bytes: int | None = None) -> None:
    """Set the limits (None keeps a limit as it is)."""
    global MAX_LATENTS, MAX_FILE_BYTES
    if max_latents is not None:
        MAX_LATENTS = int(max_latents)
    if max_file_bytes is not None:
        MAX_FILE_BYTES = int(max_file_bytes)


def check_latents(count: int, what: str = "trajectory") -> None:
    """Refuse more than MAX_LATENTS latents (before anything of that size is built)."""
    if count > MAX_LATENTS:
        raise TrajectoryError(f"{what} has {count} latents, more than the limit of {MAX_LATENTS}", LIMIT_HINT)


def check_file_size(size: int, path) -> None:
    """Refuse a trajectory file larger than MAX_FILE_BYTES (before it is read)."""
    if size > MAX_FILE_BYTES:
        raise TrajectoryError(
            f"trajectory file {path} is {size} bytes, more than the limit of {MAX_FILE_BYTES} bytes",
            "set limits.max_trajectory_bytes to read larger files",
        )
