"""Game key logs: per-frame keyboard vectors and mouse deltas, as camera trajectories and back.

Layouts (fact sheet §1.3, the FastVideo MatrixGame2 / Zelda conventions):
- `matrixgame2`  keyboard [W, S, A, D], mouse [pitch, yaw] (the MG2 "universal" vocabulary);
- `zelda`        keyboard [W, S, A, D, turn_left, turn_right], mouse [pitch, yaw].
Row f is the motion from frame f-1 to frame f (row 0 moves nothing). A key is held above 0.5. Mouse values
times `degrees_per_unit` are degrees per frame (`pitch_sign` -1 for logs whose positive pitch looks down);
Zelda's turn keys yaw by `turn_degrees` per frame. A held movement key moves `step` world units per frame.

Views. `first`: the camera is the player's eyes; per frame it yaws, pitches about its own axes, then moves
(the pose-string physics). `third`: the camera follows an avatar standing `orbit_distance` in front of it;
the movement keys move avatar and camera alike, the mouse orbits the camera about the avatar, so turning
also translates the camera. Third-person labels follow the official `tps` mode of `pose_to_input`: a
latent's translation counts only when it does not rotate (`trajectories.actions.compute_actions`).

Files: `{"format": "worldplay-keys", "layout", "view", "keyboard": [[...]], "mouse": [[...]], ...}`
(what `to_json` writes), a bare `{"keyboard", "mouse"}` JSON, or a MatrixGame2 `.npy` action file (a
pickled `{"keyboard", "mouse"}` dict or a bare keyboard array), read without running pickled code.

A trajectory has one pose per latent (4 frames), so `keys -> trajectory -> keys` returns the same per-frame
controls for logs whose controls are constant within each latent (what `to_keys` writes); within a latent
a log's varying controls come back as their per-frame average motion.
"""

from __future__ import annotations

import io
import json
import math
import pickle
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from trajectories.errors import TrajectoryError
from trajectories.geometry import rot_x, rot_y
from trajectories.limits import check_file_size, check_latents

FORMAT_TAG = "worldplay-keys"
FRAMES_PER_LATENT = 4
LAYOUTS = {
    "matrixgame2": ("W", "S", "A", "D"),
    "zelda": ("W", "S", "A", "D", "turn_left", "turn_right"),
}
VIEWS = ("first", "third")
MOVEMENT_KEYS = ("W", "S", "A", "D")
KEY_THRESHOLD = 0.5


@dataclass(frozen=True)
class KeySettings:
    """How a log's values become motion (the defaults are the pose-string physics per frame)."""

    layout: str = "matrixgame2"
    view: str = "first"
    step: float = 0.02  # world units per frame while a movement key is held (0.08 per latent)
    degrees_per_unit: float = 1.0
    pitch_sign: int = 1
    turn_degrees: float = 0.75  # Zelda turn keys: degrees of yaw per frame
    orbit_distance: float = 0.5  # third person: the avatar's distance in front of the camera

    def __post_init__(self):
        if self.layout not in LAYOUTS:
            raise TrajectoryError(f"unknown key layout {self.layout!r}", f"use one of: {', '.join(LAYOUTS)}")
        if self.view not in VIEWS:
            raise TrajectoryError(f"unknown view {self.view!r}", f"use one of: {', '.join(VIEWS)}")
        for name in ("step", "degrees_per_unit", "turn_degrees", "orbit_distance"):
            value = getattr(self, name)
            if not (isinstance(value, (int, float)) and math.isfinite(value) and value > 0):
                raise TrajectoryError(f"key log setting {name} must be a positive number, got {value!r}")
        if self.pitch_sign not in (1, -1):
            raise TrajectoryError(f"pitch_sign must be 1 or -1, got {self.pitch_sign!r}")

    @property
    def pivot(self) -> np.ndarray:
        """The point the camera rotates about, in its own axes: itself (first person) or the avatar."""
        return np.array([0.0, 0.0, self.orbit_distance if self.view == "third" else 0.0])


@dataclass(frozen=True)
class KeyLog:
    """A log in its layout: keyboard [F, K] (K keys of `settings.layout`) and mouse [F, 2] (pitch, yaw)."""

    keyboard: np.ndarray
    mouse: np.ndarray
    settings: KeySettings = KeySettings()

    def __post_init__(self):
        keys = LAYOUTS[self.settings.layout]
        keyboard = np.asarray(self.keyboard, dtype=np.float64)
        if keyboard.ndim != 2 or keyboard.shape[1] != len(keys) or len(keyboard) == 0:
            raise TrajectoryError(
                f"{self.settings.layout} keyboard must be [frames, {len(keys)}] ({', '.join(keys)}), "
                f"got {list(keyboard.shape)}"
            )
        mouse = np.asarray(self.mouse, dtype=np.float64)
        if mouse.shape != (len(keyboard), 2):
            raise TrajectoryError(f"mouse must be [{len(keyboard)}, 2] (pitch, yaw), got {list(mouse.shape)}")
        if not (np.isfinite(keyboard).all() and np.isfinite(mouse).all()):
            raise TrajectoryError("the key log contains NaN or infinite values")
        object.__setattr__(self, "keyboard", keyboard)
        object.__setattr__(self, "mouse", mouse)

    @property
    def num_frames(self) -> int:
        return len(self.keyboard)

    def controls(self) -> tuple[np.ndarray, np.ndarray]:
        """Canonical per-frame controls: W, S, A, D [F, 4] (1 = held, opposite keys cancelled) and (pitch, yaw)
        degrees [F, 2]."""
        return canonical_controls(self.keyboard, self.mouse, self.settings)


def canonical_controls(keyboard: np.ndarray, mouse: np.ndarray, settings: KeySettings) -> tuple[np.ndarray, np.ndarray]:
    """Held W, S, A, D [F, 4] and (pitch, yaw) in degrees per frame [F, 2] of a log in `settings.layout`."""
    names = LAYOUTS[settings.layout]
    held = np.asarray(keyboard) > KEY_THRESHOLD
    forward, backward, left, right = (held[:, names.index(key)] for key in MOVEMENT_KEYS)
    # opposite keys cancel (the official rule): W with S held moves neither way
    movement = np.stack([forward & ~backward, backward & ~forward, left & ~right, right & ~left], axis=1)
    movement = movement.astype(np.float64)
    degrees = np.asarray(mouse, dtype=np.float64) * settings.degrees_per_unit
    degrees[:, 0] *= settings.pitch_sign
    if "turn_left" in names:
        turn = held[:, names.index("turn_right")].astype(np.float64) - held[:, names.index("turn_left")]
        degrees[:, 1] += turn * settings.turn_degrees
    return movement, degrees


def frame_step(movement: np.ndarray, degrees: np.ndarray, settings: KeySettings) -> np.ndarray:
    """The 4x4 motion of one frame in the camera's own axes: move (camera and avatar), then rotate about the pivot."""
    forward, backward, left, right = movement
    rotation = rot_y(math.radians(degrees[1])) @ rot_x(math.radians(degrees[0]))
    move = np.array([(right - left) * settings.step, 0.0, (forward - backward) * settings.step])
    pivot = settings.pivot
    motion = np.eye(4)
    motion[:3, :3] = rotation
    motion[:3, 3] = pivot - rotation @ pivot + rotation @ move
    return motion


def integrate(movement: np.ndarray, degrees: np.ndarray, settings: KeySettings, start=None) -> np.ndarray:
    """Camera-to-world per frame [F, 4, 4] (OpenCV axes) from canonical controls; row 0 moves nothing."""
    pose = np.eye(4) if start is None else np.array(start, dtype=np.float64)
    poses = [pose.copy()]
    for held, angles in zip(movement[1:], degrees[1:]):
        pose = pose @ frame_step(held, angles, settings)
        poses.append(pose.copy())
    return np.stack(poses)


def to_trajectory(log: KeyLog):
    """Per-latent poses (frame 4i) of the log, labelled by its view (third person: the official tps rule)."""
    from trajectories.actions import compute_actions
    from trajectories.model import Trajectory

    num_latents = (log.num_frames - 1) // FRAMES_PER_LATENT + 1
    check_latents(num_latents, "key log")
    movement, degrees = log.controls()
    c2w = integrate(movement, degrees, log.settings)[::FRAMES_PER_LATENT][:num_latents]
    return Trajectory(c2w, actions=compute_actions(c2w, third_person=log.settings.view == "third"))


def _rotation_root(rotation: np.ndarray, parts: int) -> np.ndarray:
    """The rotation whose `parts`-th power is `rotation` (the principal root, by axis and angle)."""
    cosine = np.clip((np.trace(rotation) - 1.0) / 2.0, -1.0, 1.0)
    angle = math.acos(cosine)
    if angle < 1e-12:
        return np.eye(3)
    axis = np.array([rotation[2, 1] - rotation[1, 2], rotation[0, 2] - rotation[2, 0], rotation[1, 0] - rotation[0, 1]])
    axis /= 2.0 * math.sin(angle)
    cross = np.array([[0.0, -axis[2], axis[1]], [axis[2], 0.0, -axis[0]], [-axis[1], axis[0], 0.0]])
    part = angle / parts
    return np.eye(3) + math.sin(part) * cross + (1.0 - math.cos(part)) * cross @ cross


def to_keys(trajectory, settings: KeySettings = KeySettings()) -> KeyLog:
    """A key log that reproduces the trajectory's latent poses: each latent's motion split into 4 equal frames."""
    num_frames = FRAMES_PER_LATENT * (trajectory.num_latents - 1) + 1
    keys = LAYOUTS[settings.layout]
    keyboard = np.zeros((num_frames, len(keys)))
    mouse = np.zeros((num_frames, 2))
    c2w = trajectory.c2w
    pivot = settings.pivot
    for latent in range(1, trajectory.num_latents):
        relative = np.linalg.inv(c2w[latent - 1]) @ c2w[latent]
        rotation = _rotation_root(relative[:3, :3], FRAMES_PER_LATENT)
        # the frame motion's translation t solves (R^3 + R^2 + R + I) t = the latent's translation
        powers = sum(np.linalg.matrix_power(rotation, power) for power in range(FRAMES_PER_LATENT))
        translation = np.linalg.solve(powers, relative[:3, 3])
        move = rotation.T @ (translation - pivot + rotation @ pivot)
        # rotation = Ry(yaw) @ Rx(pitch): its middle row is (0, cos pitch, -sin pitch), its first column
        # (cos yaw, 0, -sin yaw)
        pitch = math.degrees(math.atan2(-rotation[1, 2], rotation[1, 1]))
        yaw = math.degrees(math.atan2(-rotation[2, 0], rotation[0, 0]))
        held = {
            "W": move[2] > settings.step / 2,
            "S": move[2] < -settings.step / 2,
            "D": move[0] > settings.step / 2,
            "A": move[0] < -settings.step / 2,
        }
        rows = slice(FRAMES_PER_LATENT * (latent - 1) + 1, FRAMES_PER_LATENT * latent + 1)
        for column, name in enumerate(keys):
            keyboard[rows, column] = float(held.get(name, False))
        mouse[rows] = [pitch * settings.pitch_sign / settings.degrees_per_unit, yaw / settings.degrees_per_unit]
    return KeyLog(keyboard, mouse, settings)


# --- files ------------------------------------------------------------------------------------


def to_json(log: KeyLog) -> dict:
    settings = log.settings
    return {
        "format": FORMAT_TAG,
        "version": 1,
        "layout": settings.layout,
        "keys": list(LAYOUTS[settings.layout]),
        "view": settings.view,
        "step": settings.step,
        "degrees_per_unit": settings.degrees_per_unit,
        "pitch_sign": settings.pitch_sign,
        "turn_degrees": settings.turn_degrees,
        "orbit_distance": settings.orbit_distance,
        "keyboard": log.keyboard.tolist(),
        "mouse": log.mouse.tolist(),
    }


def read(path: Path, settings: KeySettings | None = None, explicit: frozenset[str] = frozenset()) -> KeyLog:
    """Read a key log file (.npy or JSON). Settings in `explicit` come from `settings`; the others from
    the file when it names them, else from `settings` (or the defaults)."""
    path = Path(path)
    try:
        check_file_size(path.stat().st_size, path)
        raw = path.read_bytes()
    except FileNotFoundError:
        raise TrajectoryError(f"file not found: {path}", "give the path of a key log (.json or .npy)") from None
    except OSError as exc:
        raise TrajectoryError(f"cannot read {path}: {exc.strerror or exc}") from None
    if path.suffix.lower() == ".npy":
        data = read_npy(raw, str(path))
    else:
        from trajectories.official import parse_json_text

        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError:
            raise TrajectoryError(f"{path}: not UTF-8 JSON", "a key log is JSON or a MatrixGame2 .npy") from None
        data = parse_json_text(text, str(path))
    base = settings or KeySettings()
    if isinstance(data, dict):
        named = {
            field: data[field]
            for field in ("layout", "view", "step", "degrees_per_unit", "pitch_sign", "turn_degrees", "orbit_distance")
            if field in data and field not in explicit
        }
        if "layout" not in named and "layout" not in explicit:
            named["layout"] = _layout_for(data.get("keyboard"), base.layout)
        base = replace(base, **named) if named else base
    elif "layout" not in explicit:
        base = replace(base, layout=_layout_for(data, base.layout))
    if isinstance(data, dict) and data.get("format") not in (None, FORMAT_TAG):
        raise TrajectoryError(f"{path}: format {data.get('format')!r} is not a key log")
    keyboard = data.get("keyboard") if isinstance(data, dict) else data
    mouse = data.get("mouse") if isinstance(data, dict) else None
    if keyboard is None:
        raise TrajectoryError(f"{path}: no 'keyboard' array", "a key log holds 'keyboard' [frames, keys] and 'mouse'")
    try:
        keyboard = np.asarray(keyboard, dtype=np.float64)
        mouse = np.zeros((len(keyboard), 2)) if mouse is None else np.asarray(mouse, dtype=np.float64)
    except (TypeError, ValueError):
        raise TrajectoryError(f"{path}: keyboard and mouse must be numeric arrays") from None
    if keyboard.ndim == 2:
        check_latents((len(keyboard) - 1) // FRAMES_PER_LATENT + 1, str(path))
    try:
        return KeyLog(keyboard, mouse, base)
    except TrajectoryError as error:
        raise TrajectoryError(f"{path}: {error.message}", error.hint) from None


def _layout_for(keyboard, default: str) -> str:
    try:
        width = np.shape(keyboard)[1]
    except (IndexError, TypeError, ValueError):
        return default
    return next((layout for layout, keys in LAYOUTS.items() if len(keys) == width), default)


class _ArrayUnpickler(pickle.Unpickler):
    """Rebuilds numpy arrays, dicts, lists and numbers only: a pickled action file cannot run code."""

    _ALLOWED = {
        ("numpy.core.multiarray", "_reconstruct"),
        ("numpy._core.multiarray", "_reconstruct"),
        ("numpy", "ndarray"),
        ("numpy", "dtype"),
        ("numpy.core.multiarray", "scalar"),
        ("numpy._core.multiarray", "scalar"),
    }

    def find_class(self, module: str, name: str):
        if (module, name) in self._ALLOWED:
            return super().find_class(module, name)
        raise pickle.UnpicklingError(f"{module}.{name} is not allowed in an action file")


def read_npy(raw: bytes, name: str):
    """The array (or the pickled `{"keyboard", "mouse"}` dict) of a .npy file, without unsafe unpickling."""
    stream = io.BytesIO(raw)
    try:
        version = np.lib.format.read_magic(stream)
        read_header = np.lib.format.read_array_header_1_0 if version == (1, 0) else np.lib.format.read_array_header_2_0
        _, _, dtype = read_header(stream)
    except (ValueError, OSError) as error:
        raise TrajectoryError(
            f"{name}: not a .npy file ({error})", "a key log is JSON or a MatrixGame2 .npy action file"
        ) from None
    if not dtype.hasobject:
        stream.seek(0)
        return np.load(stream, allow_pickle=False)
    try:
        value = _ArrayUnpickler(stream).load()
    except (pickle.UnpicklingError, EOFError, AttributeError, ImportError, TypeError, ValueError) as error:
        raise TrajectoryError(
            f"{name}: cannot read the pickled action dict ({error})",
            'a .npy action file holds an array, or a {"keyboard", "mouse"} dict of arrays',
        ) from None
    if isinstance(value, np.ndarray) and value.dtype.hasobject and value.shape == ():
        value = value.item()
    return value


def write(log: KeyLog, path: Path) -> None:
    path = Path(path)
    try:
        if path.suffix.lower() == ".npy":
            payload = {"keyboard": log.keyboard.astype(np.float32), "mouse": log.mouse.astype(np.float32)}
            np.save(path, np.array(payload, dtype=object), allow_pickle=True)
        else:
            path.write_text(json.dumps(to_json(log)) + "\n", encoding="utf-8")
    except OSError as exc:
        raise TrajectoryError(f"cannot write {path}: {exc.strerror or exc}", "choose a writable file path") from None
