"""The 81 discrete action classes (the "keyboard" half of WorldPlay's dual action representation).

Each latent after the first gets `translation_class * 9 + rotation_class`, read off the relative pose
between it and the previous latent, exactly as the official `pose_to_input` does:
- translation (in the previous camera's frame, norm > 1e-4): forward if the direction is within 60 deg
  of +z, backward if more than 120 deg away; right/left likewise for +x; vertical motion is ignored;
- rotation (extrinsic xyz Euler angles of the relative rotation): yaw right/left if the y angle is
  above/below +-0.05 deg, pitch up/down likewise for the x angle.
Latent 0 is always class 0. In third-person mode (the official `tps` flag) a latent's translation counts
only when it does not rotate: a camera orbiting an avatar translates as it turns, which is no movement key.
"""

from __future__ import annotations

import numpy as np

from trajectories.errors import TrajectoryError
from trajectories.geometry import euler_xyz_extrinsic

_MIN_TRANSLATION = 1e-4
_CONE_DEG = 60.0
_MIN_ROTATION_DEG = 5e-2

# Both one-hot quadruples map through the same table: (first, second, third, fourth) flags -> class.
ONE_HOT_CLASS = {
    (0, 0, 0, 0): 0,
    (1, 0, 0, 0): 1,
    (0, 1, 0, 0): 2,
    (0, 0, 1, 0): 3,
    (0, 0, 0, 1): 4,
    (1, 0, 1, 0): 5,
    (1, 0, 0, 1): 6,
    (0, 1, 1, 0): 7,
    (0, 1, 0, 1): 8,
}
_TRANSLATION_NAMES = ("", "W", "S", "D", "A", "W+D", "W+A", "S+D", "S+A")
_ROTATION_NAMES = ("", "→", "←", "↑", "↓", "→+↑", "→+↓", "←+↑", "←+↓")
NUM_ACTIONS = 81


def translation_class(direction: np.ndarray) -> int:
    """Class 0-8 of a relative translation (fwd, back, right, left flags), 0 when it is too small to count."""
    norm = float(np.linalg.norm(direction))
    if not norm > _MIN_TRANSLATION:
        return 0
    angles = np.degrees(np.arccos(np.clip(direction / norm, -1.0, 1.0)))
    forward, backward = angles[2] < _CONE_DEG, angles[2] > 180.0 - _CONE_DEG
    right, left = angles[0] < _CONE_DEG, angles[0] > 180.0 - _CONE_DEG
    return ONE_HOT_CLASS[(int(forward), int(backward), int(right), int(left))]


def rotation_class(rotation: np.ndarray) -> int:
    """Class 0-8 of a relative rotation (yaw right, yaw left, pitch up, pitch down flags)."""
    pitch, yaw, _ = np.degrees(euler_xyz_extrinsic(rotation))
    flags = (yaw > _MIN_ROTATION_DEG, yaw < -_MIN_ROTATION_DEG, pitch > _MIN_ROTATION_DEG, pitch < -_MIN_ROTATION_DEG)
    return ONE_HOT_CLASS[tuple(int(flag) for flag in flags)]


def _rotates(rotation: np.ndarray) -> bool:
    """The tps test: the pitch or yaw angle of the relative rotation reaches the rotation threshold."""
    pitch, yaw, _ = np.degrees(euler_xyz_extrinsic(rotation))
    return not (abs(yaw) < _MIN_ROTATION_DEG and abs(pitch) < _MIN_ROTATION_DEG)


def compute_actions(c2w: np.ndarray, third_person: bool = False) -> np.ndarray:
    """Per-latent action ids (N,) int64 in [0, 80] for camera-to-world matrices (N, 4, 4) in OpenCV axes."""
    c2w = np.asarray(c2w, dtype=np.float64)
    actions = np.zeros(len(c2w), dtype=np.int64)
    if len(c2w) < 2:
        return actions
    relative = np.linalg.inv(c2w[:-1]) @ c2w[1:]
    for index, rel in enumerate(relative, start=1):
        rotation = rotation_class(rel[:3, :3])
        translation = translation_class(rel[:3, 3]) if not (third_person and _rotates(rel[:3, :3])) else 0
        actions[index] = translation * 9 + rotation
    return actions


def action_name(action_id: int) -> str:
    """Keyboard-style name of an action id: "W", "W+→", "S+A+↑", "→", and "—" for no action."""
    action_id = int(action_id)
    if not 0 <= action_id < NUM_ACTIONS:
        raise TrajectoryError(f"action id must be in [0, {NUM_ACTIONS - 1}], got {action_id}")
    parts = [part for part in (_TRANSLATION_NAMES[action_id // 9], _ROTATION_NAMES[action_id % 9]) if part]
    return "+".join(parts) if parts else "—"


def action_keys(action_id: int) -> tuple[frozenset[str], frozenset[str]]:
    """The pressed (movement keys from "WASD", arrow keys from "→←↑↓") of an action id, for HUDs."""
    name = action_name(action_id)
    keys = set() if name == "—" else set(name.split("+"))
    return frozenset(keys & set("WASD")), frozenset(keys & set("→←↑↓"))
