"""Rigid-transform helpers in the official conventions (OpenCV camera axes: +x right, +y down, +z forward).

Every function works on float64 numpy arrays and accepts a leading batch dimension where noted.
"""

from __future__ import annotations

import numpy as np

# Beyond this, |sin(beta)| is 1 for all practical purposes and the x/z angles of an extrinsic-xyz
# decomposition are no longer separable (gimbal lock).
_GIMBAL_EPS = 1e-9


def rot_x(angle: float) -> np.ndarray:
    """Rotation about +x by `angle` radians; positive pitches an OpenCV camera's forward axis up (toward -y)."""
    c, s = np.cos(angle), np.sin(angle)
    return np.array([[1.0, 0.0, 0.0], [0.0, c, -s], [0.0, s, c]])


def rot_y(angle: float) -> np.ndarray:
    """Rotation about +y by `angle` radians; positive yaws an OpenCV camera's forward axis right (toward +x)."""
    c, s = np.cos(angle), np.sin(angle)
    return np.array([[c, 0.0, s], [0.0, 1.0, 0.0], [-s, 0.0, c]])


def rot_z(angle: float) -> np.ndarray:
    """Rotation about +z by `angle` radians; positive rolls an OpenCV camera's right axis down (toward +y)."""
    c, s = np.cos(angle), np.sin(angle)
    return np.array([[c, -s, 0.0], [s, c, 0.0], [0.0, 0.0, 1.0]])


def rigid_inverse(matrices: np.ndarray) -> np.ndarray:
    """Inverse of rigid 4x4 transforms (..., 4, 4) via the transpose, exact up to rounding for rotations."""
    rotation_t = np.swapaxes(matrices[..., :3, :3], -1, -2)
    out = np.zeros_like(matrices)
    out[..., :3, :3] = rotation_t
    out[..., :3, 3] = -np.einsum("...ij,...j->...i", rotation_t, matrices[..., :3, 3])
    out[..., 3, 3] = 1.0
    return out


def euler_xyz_extrinsic(rotation: np.ndarray) -> np.ndarray:
    """Angles (..., 3) in radians of R = Rz(gamma) @ Ry(beta) @ Rx(alpha): the extrinsic "xyz" convention.

    Matches scipy's `Rotation.from_matrix(R).as_euler("xyz")` for proper rotations: beta in [-pi/2, pi/2],
    and at gimbal lock the third (z) angle is set to 0 as scipy does.
    """
    rotation = np.asarray(rotation, dtype=np.float64)
    sin_beta = np.clip(-rotation[..., 2, 0], -1.0, 1.0)
    beta = np.arcsin(sin_beta)
    alpha = np.arctan2(rotation[..., 2, 1], rotation[..., 2, 2])
    gamma = np.arctan2(rotation[..., 1, 0], rotation[..., 0, 0])
    locked = np.abs(sin_beta) > 1.0 - _GIMBAL_EPS
    if np.any(locked):
        # With gamma = 0, R = Ry(+-90) @ Rx(alpha) whose middle row is (0, cos alpha, -sin alpha).
        alpha = np.where(locked, np.arctan2(-rotation[..., 1, 2], rotation[..., 1, 1]), alpha)
        gamma = np.where(locked, 0.0, gamma)
    return np.stack([alpha, beta, gamma], axis=-1)


def rotation_from_ypr(yaw: float, pitch: float, roll: float) -> np.ndarray:
    """Camera-to-world rotation for yaw, pitch, roll in radians: Ry(yaw) @ Rx(pitch) @ Rz(roll).

    Yaw turns about the world's vertical (y) axis, positive to the right; pitch then tilts about the
    camera's own x axis, positive up; roll finally turns about the camera's viewing axis, positive
    clockwise as seen by the camera. This is the same order the pose-string generator composes yaw and pitch.
    """
    return rot_y(yaw) @ rot_x(pitch) @ rot_z(roll)


def ypr_from_rotation(rotation: np.ndarray) -> np.ndarray:
    """Inverse of `rotation_from_ypr` for (..., 3, 3) rotations: (..., 3) yaw, pitch, roll in radians."""
    rotation = np.asarray(rotation, dtype=np.float64)
    pitch = np.arcsin(np.clip(-rotation[..., 1, 2], -1.0, 1.0))
    yaw = np.arctan2(rotation[..., 0, 2], rotation[..., 2, 2])
    roll = np.arctan2(rotation[..., 1, 0], rotation[..., 1, 1])
    locked = np.abs(rotation[..., 1, 2]) > 1.0 - _GIMBAL_EPS
    if np.any(locked):
        # Looking straight up or down: yaw and roll both turn about the view axis; keep roll 0.
        yaw = np.where(locked, np.arctan2(-rotation[..., 2, 0], rotation[..., 0, 0]), yaw)
        roll = np.where(locked, 0.0, roll)
    return np.stack([yaw, pitch, roll], axis=-1)


def rigidity_error(matrices: np.ndarray) -> np.ndarray:
    """Per-matrix (...,) distance from a proper rigid transform: max of |R^T R - I|, |det R - 1|, |last row - e4|."""
    rotation = matrices[..., :3, :3]
    orthogonality = np.abs(np.swapaxes(rotation, -1, -2) @ rotation - np.eye(3)).max(axis=(-1, -2))
    determinant = np.abs(np.linalg.det(rotation) - 1.0)
    last_row = np.abs(matrices[..., 3, :] - np.array([0.0, 0.0, 0.0, 1.0])).max(axis=-1)
    return np.maximum(np.maximum(orthogonality, determinant), last_row)


# OpenGL / Blender / nerfstudio cameras look down -z with +y up; OpenCV cameras look down +z with +y down.
# The same physical camera differs by a 180-degree turn about its own x axis, applied on the camera side.
OPENGL_FROM_OPENCV = np.diag([1.0, -1.0, -1.0, 1.0])


def flip_camera_axes(c2w: np.ndarray) -> np.ndarray:
    """Convert camera-to-world matrices between OpenCV and OpenGL camera axes (the map is its own inverse)."""
    return c2w @ OPENGL_FROM_OPENCV
