"""Camera trajectories for WorldPlay (torch-free, numpy only).

A `Trajectory` holds per-latent camera-to-world poses (OpenCV axes), pixel intrinsics and the official
81-class action ids. Build one from a pose string, a preset name or a file with `resolve(spec)`.
"""

from trajectories.actions import action_name, compute_actions
from trajectories.errors import TrajectoryError
from trajectories.formats import load as load_trajectory
from trajectories.formats import save as save_trajectory
from trajectories.latents import CHUNK, MODELS, frames_to_latents, latents_to_frames, valid_latents
from trajectories.model import DEFAULT_K, Trajectory, parse_pose_string
from trajectories.presets import PRESETS, Preset
from trajectories.resolve import resolve
from trajectories.validation import Suggestion, ValidationReport

__all__ = [
    "CHUNK",
    "DEFAULT_K",
    "MODELS",
    "PRESETS",
    "Preset",
    "Suggestion",
    "Trajectory",
    "TrajectoryError",
    "ValidationReport",
    "action_name",
    "compute_actions",
    "frames_to_latents",
    "latents_to_frames",
    "load_trajectory",
    "parse_pose_string",
    "resolve",
    "save_trajectory",
    "valid_latents",
]
