"""The Trajectory: per-latent camera poses, intrinsics and action ids, immutable."""

from __future__ import annotations

import numpy as np

from trajectories.actions import NUM_ACTIONS, compute_actions
from trajectories.errors import TrajectoryError
from trajectories.geometry import rigidity_error, ypr_from_rotation
from trajectories.latents import latents_to_frames, nearest_valid_latents
from trajectories.limits import check_latents
from trajectories.validation import ValidationReport, validate_length

# The official default pixel intrinsics (1920x1080, about 89.4 x 58.2 deg field of view).
DEFAULT_K = np.array([[969.6969696969696, 0.0, 960.0], [0.0, 969.6969696969696, 540.0], [0.0, 0.0, 1.0]])
DEFAULT_K.setflags(write=False)

# Imported files are often rounded to 6 digits; anything further from rigid is a wrong convention or data.
RIGID_TOLERANCE = 1e-4


def _frozen(array: np.ndarray) -> np.ndarray:
    array.setflags(write=False)
    return array


class Trajectory:
    """Per-latent camera-to-world poses (OpenCV axes: +x right, +y down, +z forward), pixel K and actions.

    `c2w` (N,4,4) float64, `K` (N,3,3) float64, `actions` (N,) int64 in [0, 80]. Actions default to the
    official 81-class labels of `c2w`. `source` optionally remembers the pose string or preset it came from.
    """

    __slots__ = ("_c2w", "_K", "_actions", "_source")

    def __init__(self, c2w, K=None, actions=None, source: str | None = None):
        c2w = np.array(c2w, dtype=np.float64)
        if c2w.ndim != 3 or c2w.shape[1:] != (4, 4) or len(c2w) == 0:
            raise TrajectoryError(
                f"camera poses must have shape (N, 4, 4) with N >= 1, got {c2w.shape}",
                "give one 4x4 camera-to-world matrix per latent",
            )
        check_latents(len(c2w))
        _check_finite(c2w, "extrinsic")
        errors = rigidity_error(c2w)
        bad = np.flatnonzero(errors > RIGID_TOLERANCE)
        if len(bad):
            raise TrajectoryError(
                f"latent {bad[0]}: extrinsic is not a rigid camera-to-world transform (off by {errors[bad[0]]:.3g})",
                "the rotation must be orthonormal with det +1 and the last row 0 0 0 1; "
                "check the convention (c2w vs w2c, OpenGL vs OpenCV, row- vs column-major)",
            )
        K = np.array(DEFAULT_K if K is None else K, dtype=np.float64)
        if K.shape == (3, 3):
            K = np.repeat(K[None], len(c2w), axis=0)
        if K.shape != (len(c2w), 3, 3):
            raise TrajectoryError(f"intrinsics must have shape (3, 3) or ({len(c2w)}, 3, 3), got {K.shape}")
        _check_intrinsics(K)
        if actions is None:
            actions = compute_actions(c2w)
        actions = np.array(actions)
        if actions.shape != (len(c2w),) or not np.issubdtype(actions.dtype, np.integer):
            raise TrajectoryError(f"actions must be {len(c2w)} integers, got shape {actions.shape} {actions.dtype}")
        if actions.min() < 0 or actions.max() >= NUM_ACTIONS:
            raise TrajectoryError(f"action ids must be in [0, {NUM_ACTIONS - 1}]")
        object.__setattr__(self, "_c2w", _frozen(c2w))
        object.__setattr__(self, "_K", _frozen(K))
        object.__setattr__(self, "_actions", _frozen(actions.astype(np.int64)))
        object.__setattr__(self, "_source", source)

    def __setattr__(self, name, value):
        raise AttributeError("Trajectory is immutable")

    @property
    def c2w(self) -> np.ndarray:
        return self._c2w

    @property
    def K(self) -> np.ndarray:  # noqa: N802 (the conventional name of the intrinsics matrix)
        return self._K

    @property
    def actions(self) -> np.ndarray:
        return self._actions

    @property
    def source(self) -> str | None:
        return self._source

    @property
    def num_latents(self) -> int:
        return len(self._c2w)

    @property
    def num_frames(self) -> int:
        return latents_to_frames(self.num_latents)

    def __len__(self) -> int:
        return self.num_latents

    def __eq__(self, other) -> bool:
        if not isinstance(other, Trajectory):
            return NotImplemented
        return (
            np.array_equal(self._c2w, other._c2w)
            and np.array_equal(self._K, other._K)
            and np.array_equal(self._actions, other._actions)
        )

    __hash__ = None

    def __repr__(self) -> str:
        origin = f", source={self._source!r}" if self._source else ""
        return f"Trajectory(num_latents={self.num_latents}, num_frames={self.num_frames}{origin})"

    # Model inputs -------------------------------------------------------------------------------

    def viewmats(self) -> np.ndarray:
        """World-to-camera matrices (N,4,4): the model's `viewmats`, inverted like the official code."""
        return np.linalg.inv(self._c2w)

    def normalized_K(self) -> np.ndarray:  # noqa: N802
        """(N,3,3) intrinsics normalised by the principal point: fx/(2cx), fy/(2cy), centre (0.5, 0.5).

        The official pipeline assumes the principal point is the image centre and does not rescale K to
        the generation size, so only the field of view matters.
        """
        K = self._K.copy()
        K[:, 0, 0] /= K[:, 0, 2] * 2
        K[:, 1, 1] /= K[:, 1, 2] * 2
        K[:, 0, 2] = 0.5
        K[:, 1, 2] = 0.5
        return K

    # Derived views ------------------------------------------------------------------------------

    def positions(self) -> np.ndarray:
        """Camera centres in world coordinates (N,3)."""
        return self._c2w[:, :3, 3].copy()

    def yaw_pitch_roll(self) -> np.ndarray:
        """(N,3) degrees: yaw right-positive about world y, then pitch up-positive, then roll (see geometry)."""
        return np.degrees(ypr_from_rotation(self._c2w[:, :3, :3])) + 0.0  # + 0.0 turns -0.0 into 0.0

    def rebased(self) -> Trajectory:
        """The same path expressed relative to the first camera (latent 0 becomes the identity)."""
        c2w = np.linalg.inv(self._c2w[0]) @ self._c2w
        return Trajectory(c2w, self._K, source=self._source)

    def scaled(self, factor: float) -> Trajectory:
        """The path with every camera position multiplied by `factor` (a scene-scale change)."""
        if not np.isfinite(factor) or factor <= 0:
            raise TrajectoryError(
                f"scale factor must be positive, got {factor}", "e.g. --scale 0.5 halves every distance"
            )
        c2w = self._c2w.copy()
        c2w[:, :3, 3] *= factor
        return Trajectory(c2w, self._K, source=self._source)

    # Model validity -----------------------------------------------------------------------------

    def validate(self, model: str, frames: int | None = None) -> ValidationReport:
        """Whether `model` accepts this trajectory (and matches `frames` pixel frames, if given)."""
        return validate_length(model, self.num_latents, frames)

    def fixed(self, model: str, how: str = "pad") -> Trajectory:
        """The nearest valid trajectory for `model`: "pad" holds the last pose, "trim" drops trailing latents."""
        below, above = nearest_valid_latents(model, self.num_latents)
        if how == "pad":
            extra = above - self.num_latents
            c2w = np.concatenate([self._c2w, np.repeat(self._c2w[-1:], extra, axis=0)])
            K = np.concatenate([self._K, np.repeat(self._K[-1:], extra, axis=0)])
            return Trajectory(c2w, K, np.concatenate([self._actions, np.zeros(extra, np.int64)]))
        if how == "trim":
            if below is None:
                raise TrajectoryError(
                    f"cannot trim {self.num_latents} latents to a valid {model} length", "pad instead (how='pad')"
                )
            return Trajectory(self._c2w[:below], self._K[:below], self._actions[:below])
        raise TrajectoryError(f"unknown fix {how!r}", "use 'pad' or 'trim'")

    # Files ----------------------------------------------------------------------------------

    def to_official_json(self) -> dict:
        """The official pose JSON: {"0": {"extrinsic": c2w 4x4, "K": 3x3 pixels}, "1": ...}."""
        from trajectories.official import official_dict

        return official_dict(self._c2w, self._K)

    @classmethod
    def from_official_json(cls, data) -> Trajectory:
        from trajectories.official import official_arrays

        c2w, K = official_arrays(data)
        return cls(c2w, K)


def _check_finite(array: np.ndarray, what: str) -> None:
    if not np.all(np.isfinite(array)):
        latent = int(np.argwhere(~np.isfinite(array))[0][0])
        raise TrajectoryError(f"latent {latent}: {what} contains a non-finite number (NaN or infinity)")


def _check_intrinsics(K: np.ndarray) -> None:
    _check_finite(K, "K")
    # Vectorised: editors rebuild trajectories of hundreds of latents per key press.
    positive = (K[:, 0, 0] > 0) & (K[:, 1, 1] > 0) & (K[:, 0, 2] > 0) & (K[:, 1, 2] > 0)
    if not positive.all():
        latent = int(np.argmin(positive))
        raise TrajectoryError(
            f"latent {latent}: K needs positive fx, fy, cx, cy (pixels), got {K[latent, :2].tolist()}",
            "K is [[fx, 0, cx], [0, fy, cy], [0, 0, 1]] with the principal point at the image centre",
        )
    last_row_ok = np.isclose(K[:, 2], [0.0, 0.0, 1.0]).all(axis=1)
    if not last_row_ok.all():
        latent = int(np.argmin(last_row_ok))
        raise TrajectoryError(f"latent {latent}: K's last row must be 0 0 1, got {K[latent, 2].tolist()}")


def parse_pose_string(text: str) -> Trajectory:
    """A trajectory from a pose string such as "w-31" or "w-3, w+right:1.5-4" (grammar in trajectories.poses)."""
    from trajectories.poses import format_pose_string, parse_segments, segments_to_c2w

    segments = parse_segments(text)
    return Trajectory(segments_to_c2w(segments), source=format_pose_string(segments))
