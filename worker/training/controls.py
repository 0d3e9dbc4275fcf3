"""Per-frame controls (keyboard, mouse) and camera poses of a clip, and the per-latent labels derived from them.

Canonical controls, whatever the dataset's vocabulary: keyboard [F, 4] as W, S, A, D (1 = held) and mouse
[F, 2] as (pitch, yaw) in degrees per frame, positive = look up / right. Row f is the motion from frame
f-1 to frame f. Latent i reads frame 4i (the fact sheet's alignment: latent 0 is one frame, every later
latent four), so its label describes the motion into latent i; latent 0 is always class 0.

Labels come from the controls when a clip has them (the official precedence) and from the poses
otherwise; poses come from the pose file when there is one and are integrated from the controls otherwise
(yaw, then pitch about the camera's own axes, then the translation: the pose-string physics).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from trajectories.actions import ONE_HOT_CLASS, compute_actions
from worldplay_cli.contract.training import ActionVocabulary

FRAMES_PER_LATENT = 4
CANONICAL_KEYS = ("W", "S", "A", "D")
# Official action files name a look direction per frame.
OFFICIAL_VIEW = {"LR": (0.0, 1.0), "LL": (0.0, -1.0), "LU": (1.0, 0.0), "LD": (-1.0, 0.0)}
# The Zelda layout's turn keys: the sign of the yaw they add.
TURN_KEYS = {"turn_left": -1.0, "turn_right": 1.0}


class ClipDataError(ValueError):
    """A clip's actions or poses are unusable; the message says why (it becomes the rejection reason)."""


def read_json(path: Path):
    try:
        return json.loads(Path(path).read_text())
    except FileNotFoundError:
        raise ClipDataError(f"{Path(path).name} does not exist") from None
    except (OSError, json.JSONDecodeError) as error:
        raise ClipDataError(f"cannot read {Path(path).name}: {error}") from None


def read_controls(path: Path, vocabulary: ActionVocabulary) -> tuple[np.ndarray, np.ndarray]:
    """Canonical keyboard [F, 4] and mouse [F, 2] from `{"keyboard", "mouse"}` JSON (a `worldplay-keys` log
    too), a MatrixGame2 `.npy` action file or official per-frame actions."""
    if Path(path).suffix.lower() == ".npy":
        data = _read_npy(Path(path))
        return _from_arrays(data if isinstance(data, dict) else {"keyboard": data}, vocabulary)
    data = read_json(path)
    if isinstance(data, dict) and "keyboard" in data:
        return _from_arrays(data, vocabulary)
    if isinstance(data, dict) and data and all(isinstance(value, dict) for value in data.values()):
        return _from_official(data, vocabulary)
    raise ClipDataError(
        f"{Path(path).name}: expected {{'keyboard': [...], 'mouse': [...]}} or official per-frame actions"
    )


def _read_npy(path: Path):
    from trajectories.errors import TrajectoryError
    from trajectories.keys import read_npy

    try:
        return read_npy(path.read_bytes(), path.name)
    except FileNotFoundError:
        raise ClipDataError(f"{path.name} does not exist") from None
    except (OSError, TrajectoryError) as error:
        raise ClipDataError(f"cannot read {path.name}: {error}") from None


def _from_arrays(data: dict, vocabulary: ActionVocabulary) -> tuple[np.ndarray, np.ndarray]:
    try:
        keyboard = np.asarray(data["keyboard"], dtype=np.float32)
        mouse = np.asarray(data.get("mouse", np.zeros((len(keyboard), 0))), dtype=np.float32)
    except (TypeError, ValueError) as error:
        raise ClipDataError(f"actions are not numeric arrays: {error}") from None
    if keyboard.ndim != 2 or keyboard.shape[1] != len(vocabulary.keys):
        raise ClipDataError(
            f"keyboard must be [frames, {len(vocabulary.keys)}] ({', '.join(vocabulary.keys)}), got {list(keyboard.shape)}"
        )
    if mouse.size and (mouse.ndim != 2 or mouse.shape != (len(keyboard), len(vocabulary.mouse))):
        raise ClipDataError(
            f"mouse must be [{len(keyboard)}, {len(vocabulary.mouse)}] ({', '.join(vocabulary.mouse)}), got {list(mouse.shape)}"
        )
    if not (np.isfinite(keyboard).all() and np.isfinite(mouse).all()):
        raise ClipDataError("actions contain NaN or infinite values")
    canonical_keyboard = np.zeros((len(keyboard), 4), dtype=np.float32)
    turn = np.zeros(len(keyboard), dtype=np.float32)
    for column, name in enumerate(vocabulary.keys):
        held = keyboard[:, column] > vocabulary.key_threshold
        if name.upper() in CANONICAL_KEYS:
            canonical_keyboard[:, CANONICAL_KEYS.index(name.upper())] = held
        elif name in TURN_KEYS:
            turn += TURN_KEYS[name] * held
    canonical_mouse = np.zeros((len(keyboard), 2), dtype=np.float32)
    for column, name in enumerate(vocabulary.mouse if mouse.size else []):
        value = mouse[:, column] * vocabulary.degrees_per_unit
        if name == "pitch":
            canonical_mouse[:, 0] = value * vocabulary.pitch_sign
        else:
            canonical_mouse[:, 1] = value
    canonical_mouse[np.abs(canonical_mouse) <= vocabulary.mouse_threshold * vocabulary.degrees_per_unit] = 0.0
    canonical_mouse[:, 1] += turn * vocabulary.turn_degrees
    return canonical_keyboard, canonical_mouse


def _from_official(data: dict, vocabulary: ActionVocabulary) -> tuple[np.ndarray, np.ndarray]:
    frames = len(data)
    keyboard = np.zeros((frames, 4), dtype=np.float32)
    mouse = np.zeros((frames, 2), dtype=np.float32)
    for row, entry in enumerate(data.values()):
        move = str(entry.get("move_action", "")).upper()
        for column, key in enumerate(CANONICAL_KEYS):
            keyboard[row, column] = key in move
        view = entry.get("view_action") or ""
        if view and view not in OFFICIAL_VIEW:
            raise ClipDataError(
                f"frame {row}: unknown view_action {view!r} (expected one of {', '.join(OFFICIAL_VIEW)})"
            )
        if view:
            mouse[row] = np.array(OFFICIAL_VIEW[view]) * vocabulary.degrees_per_unit
    return keyboard, mouse


def labels_from_controls(
    keyboard: np.ndarray, mouse: np.ndarray, num_latents: int, third_person: bool = False
) -> np.ndarray:
    """81-class id per latent: translation from the keys at frame 4i (opposite keys cancel), rotation from the
    mouse; in third person no translation while the view turns (the official tps rule)."""
    labels = np.zeros(num_latents, dtype=np.int64)
    for latent in range(1, num_latents):
        held = keyboard[FRAMES_PER_LATENT * latent] > 0.5
        forward, backward, left, right = (bool(flag) for flag in held)
        translation = (
            int(forward and not backward),
            int(backward and not forward),
            int(right and not left),
            int(left and not right),
        )
        pitch, yaw = mouse[FRAMES_PER_LATENT * latent]
        rotation = (int(yaw > 0), int(yaw < 0), int(pitch > 0), int(pitch < 0))
        if third_person and any(rotation):
            translation = (0, 0, 0, 0)
        labels[latent] = ONE_HOT_CLASS[translation] * 9 + ONE_HOT_CLASS[rotation]
    return labels


def integrate_controls(
    keyboard: np.ndarray,
    mouse: np.ndarray,
    step: float,
    start: np.ndarray | None = None,
    view: str = "first",
    orbit_distance: float = 0.5,
) -> np.ndarray:
    """Camera-to-world per frame [F, 4, 4]: row f's yaw, pitch, forward and right moves frame f-1 to frame f
    (third person: the turn orbits the avatar `orbit_distance` ahead); `trajectories.keys` physics."""
    from trajectories.keys import KeySettings, integrate

    settings = KeySettings(view=view, step=step, orbit_distance=orbit_distance)
    return integrate(np.asarray(keyboard, np.float64), np.asarray(mouse, np.float64), settings, start)


def read_poses(path: Path, width: int, height: int) -> tuple[np.ndarray, np.ndarray]:
    """Per-frame camera-to-world [F, 4, 4] and pixel intrinsics [F, 3, 3].

    The official training format ({"<frame>": {"w2c", "intrinsic"}}, frames in insertion order) is per
    frame; any `trajectories` format is per latent and is interpolated to frames.
    """
    data = read_json(path)
    if isinstance(data, dict) and data and all(isinstance(value, dict) and "w2c" in value for value in data.values()):
        try:
            w2c = np.asarray([entry["w2c"] for entry in data.values()], dtype=np.float64)
            intrinsics = np.asarray([entry["intrinsic"] for entry in data.values()], dtype=np.float64)
        except (KeyError, TypeError, ValueError) as error:
            raise ClipDataError(f"{Path(path).name}: malformed pose entry ({error})") from None
        if w2c.shape[1:] != (4, 4) or intrinsics.shape[1:] != (3, 3):
            raise ClipDataError(f"{Path(path).name}: w2c must be 4x4 and intrinsic 3x3 per frame")
        if not np.isfinite(w2c).all() or np.abs(np.linalg.det(w2c[:, :3, :3]) - 1).max() > 1e-3:
            raise ClipDataError(f"{Path(path).name}: w2c matrices are not rigid camera transforms")
        return np.linalg.inv(w2c), intrinsics
    return _poses_from_trajectory(path, width, height)


def _poses_from_trajectory(path: Path, width: int, height: int) -> tuple[np.ndarray, np.ndarray]:
    from trajectories import TrajectoryError, load_trajectory
    from trajectories.render import frame_intrinsics, frame_poses

    try:
        trajectory = load_trajectory(path)
    except TrajectoryError as error:
        raise ClipDataError(f"{Path(path).name}: {error}") from None
    normalized = frame_intrinsics(trajectory)
    pixel = normalized.copy()
    pixel[:, 0] *= width
    pixel[:, 1] *= height
    return frame_poses(trajectory), pixel


def labels_from_poses(c2w: np.ndarray, num_latents: int, third_person: bool = False) -> np.ndarray:
    """The official 81-class labels of the latent poses (frame 4i) through `trajectories`."""
    latents = c2w[: FRAMES_PER_LATENT * (num_latents - 1) + 1 : FRAMES_PER_LATENT]
    return compute_actions(latents, third_person=third_person)


def latent_cameras(c2w: np.ndarray, intrinsics: np.ndarray, num_latents: int) -> tuple[np.ndarray, np.ndarray]:
    """Model inputs per latent: viewmats [T, 4, 4] (w2c relative to latent 0) and normalised K [T, 3, 3]."""
    frames = np.arange(num_latents) * FRAMES_PER_LATENT
    c2w_latent = c2w[frames]
    relative = np.linalg.inv(c2w_latent[0]) @ c2w_latent
    K = intrinsics[frames].copy()
    K[:, 0, 0] /= 2 * K[:, 0, 2]
    K[:, 1, 1] /= 2 * K[:, 1, 2]
    K[:, 0, 2] = 0.5
    K[:, 1, 2] = 0.5
    return np.linalg.inv(relative), K
