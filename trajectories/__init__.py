"""Camera trajectories for WorldPlay (torch-free, numpy only).

A `Trajectory` holds per-latent camera-to-world poses (OpenCV axes), pixel intrinsics and the official
81-class action ids. Build one from a pose string, a preset name or a file with `resolve(spec)`.

The names below are loaded on first access: `from trajectories.errors import TrajectoryError` (what the
CLI needs to start) must not pay for numpy.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from trajectories.actions import action_name, compute_actions
    from trajectories.errors import TrajectoryError
    from trajectories.formats import load as load_trajectory
    from trajectories.formats import save as save_trajectory
    from trajectories.latents import CHUNK, MODELS, frames_to_latents, latents_to_frames, valid_latents
    from trajectories.model import DEFAULT_K, Trajectory, parse_pose_string
    from trajectories.presets import PRESETS, Preset
    from trajectories.resolve import resolve
    from trajectories.validation import Suggestion, ValidationReport

# public name -> (module, name in it)
_EXPORTS = {
    "CHUNK": ("latents", "CHUNK"),
    "DEFAULT_K": ("model", "DEFAULT_K"),
    "MODELS": ("latents", "MODELS"),
    "PRESETS": ("presets", "PRESETS"),
    "Preset": ("presets", "Preset"),
    "Suggestion": ("validation", "Suggestion"),
    "Trajectory": ("model", "Trajectory"),
    "TrajectoryError": ("errors", "TrajectoryError"),
    "ValidationReport": ("validation", "ValidationReport"),
    "action_name": ("actions", "action_name"),
    "compute_actions": ("actions", "compute_actions"),
    "frames_to_latents": ("latents", "frames_to_latents"),
    "latents_to_frames": ("latents", "latents_to_frames"),
    "load_trajectory": ("formats", "load"),
    "parse_pose_string": ("model", "parse_pose_string"),
    "resolve": ("resolve", "resolve"),
    "save_trajectory": ("formats", "save"),
    "valid_latents": ("latents", "valid_latents"),
}

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


def __getattr__(name: str):
    try:
        module, attribute = _EXPORTS[name]
    except KeyError:
        raise AttributeError(f"module 'trajectories' has no attribute {name!r}") from None
    value = getattr(importlib.import_module(f"trajectories.{module}"), attribute)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_EXPORTS))
