"""One entry point for "a trajectory, however the user wrote it": preset name, file path or pose string."""

from __future__ import annotations

import difflib
import os
from pathlib import Path

from trajectories.errors import TrajectoryError
from trajectories.formats import load
from trajectories.model import Trajectory, parse_pose_string
from trajectories.presets import PRESETS

_FILE_SUFFIXES = (".json", ".csv")


def resolve(spec) -> Trajectory:
    """A preset name (see PRESETS), a path to a trajectory file (.json/.csv, format detected), or a pose string."""
    if isinstance(spec, Trajectory):
        return spec
    if not isinstance(spec, (str, os.PathLike)):
        raise TrajectoryError(f"expected a pose string, preset name or file path, got {type(spec).__name__}")
    text = os.fspath(spec).strip()
    if not text:
        raise TrajectoryError("trajectory is empty", "give a pose string like 'w-31', a preset name or a .json file")
    if text in PRESETS:
        return PRESETS[text].trajectory()
    path = Path(text).expanduser()
    if text.lower().endswith(_FILE_SUFFIXES) or os.sep in text or "/" in text or _is_file(path):
        return load(path)
    try:
        return parse_pose_string(text)
    except TrajectoryError:
        close = difflib.get_close_matches(text, PRESETS, 1, 0.6)
        if close and not any(ch.isdigit() for ch in text):
            raise TrajectoryError(
                f"{text!r} is not a preset, a file or a pose string", f"did you mean the preset {close[0]!r}?"
            ) from None
        raise


def _is_file(path: Path) -> bool:
    try:
        return path.is_file()
    except (OSError, ValueError):  # a name too long for a file (a long pose string), a NUL byte
        return False
