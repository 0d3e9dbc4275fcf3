"""Preview rendering: re-project one reference image along a camera trajectory (numpy + PIL, no torch).

The preview engine has no model, so it fakes the video a model would make by warping the reference
image as if the scene were a simple 3-D stage seen from each camera pose:

- **Rotation** is exact: a pure rotation between two pinhole cameras is the homography
  ``K_out · Rᵀ · K_ref⁻¹``, whatever the scene depth.
- **Translation** needs depth, so we assume one: a ground plane ``camera_height`` below the reference
  camera (OpenCV axes, +y is down) and a vertical backdrop plane ``far_depth`` ahead of it. Each output
  ray is intersected with whichever plane it meets first; the hit point is projected into the reference
  camera. Walking forward therefore zooms the backdrop gently and streams the ground past quickly.
- **Outside the reference image** (turned away, walked back) pixels repeat the nearest edge, fading over
  ``fade_width`` of the image size into a blurred, darkened copy, so the frame border reads as "unknown"
  rather than as a hard black hole. Rays that point behind the reference camera get the full fade.

Intrinsics are used in normalised form (``fx/W``, ``fy/H``, principal point at the centre) exactly like the
model's conditioning, so the same trajectory previews identically at every output size.
Latent ``i`` is video frame ``4·i``; the poses in between are interpolated (slerp rotation, lerp translation).
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING

import numpy as np
from PIL import Image, ImageFilter

from trajectories.hud import Hud

if TYPE_CHECKING:
    from trajectories import Trajectory

FRAMES_PER_LATENT = 4

# The official default K (1920x1080, fx = fy = 969.70) in normalised form: ~89.4° x 58.2° field of view.
DEFAULT_K_NORM = np.array(
    [[969.6969696969696 / 1920.0, 0.0, 0.5], [0.0, 969.6969696969696 / 1080.0, 0.5], [0.0, 0.0, 1.0]]
)

# Below this |z| a ray counts as parallel to the backdrop / pointing behind the reference camera.
_EPSILON = 1e-6


@dataclass(frozen=True)
class SceneDepth:
    """The stage the reference image is painted on, in trajectory units (a pose-string step is 0.08)."""

    camera_height: float = 1.0
    far_depth: float = 4.0
    fade_width: float = 0.12
    outside_darkening: float = 0.55
    blur_radius: float = 0.02

    def for_trajectory(self, c2w_rel: np.ndarray) -> SceneDepth:
        """Push the backdrop back so no camera gets closer to it than half its distance.

        Otherwise a long walk forward would pass through the backdrop and turn the view inside out.
        """
        travel = float(np.max(np.linalg.norm(c2w_rel[:, :3, 3], axis=-1), initial=0.0))
        return replace(self, far_depth=max(self.far_depth, 2.0 * travel))


def normalize_intrinsics(K: np.ndarray) -> np.ndarray:
    """Pixel K -> normalised K the way the model does it: the principal point is assumed to be the centre."""
    K = np.asarray(K, dtype=np.float64)
    if K.shape[-2:] != (3, 3):
        raise ValueError(f"intrinsics must be 3x3, got shape {K.shape}")
    K_norm = np.zeros_like(K)
    K_norm[..., 0, 0] = K[..., 0, 0] / (2.0 * K[..., 0, 2])
    K_norm[..., 1, 1] = K[..., 1, 1] / (2.0 * K[..., 1, 2])
    K_norm[..., 0, 2] = 0.5
    K_norm[..., 1, 2] = 0.5
    K_norm[..., 2, 2] = 1.0
    return K_norm


def intrinsics_from_fov(fov_x_degrees: float, width: int, height: int) -> np.ndarray:
    """Normalised K for a horizontal field of view and square pixels at ``width`` x ``height``."""
    if not 0.0 < fov_x_degrees < 180.0:
        raise ValueError(f"horizontal field of view must be in (0, 180) degrees, got {fov_x_degrees}")
    focal_x = 0.5 / math.tan(math.radians(fov_x_degrees) / 2.0)
    return np.array([[focal_x, 0.0, 0.5], [0.0, focal_x * width / height, 0.5], [0.0, 0.0, 1.0]])


def _scaled_intrinsics(K_norm: np.ndarray, width: int, height: int) -> np.ndarray:
    """Normalised K -> pixel K for an image of ``width`` x ``height`` (pixel centres at +0.5)."""
    return np.diag([width, height, 1.0]) @ K_norm


def _rotation_to_quaternion(rotation: np.ndarray) -> np.ndarray:
    """(..., 3, 3) rotation matrices -> (..., 4) unit quaternions (w, x, y, z).

    Picks, per matrix, the largest of the four candidate components to divide by, so the result stays
    accurate near 180° turns where the trace-based formula loses precision.
    """
    m = rotation
    trace = m[..., 0, 0] + m[..., 1, 1] + m[..., 2, 2]
    candidates = np.stack(
        [
            np.stack([1.0 + trace, m[..., 2, 1] - m[..., 1, 2], m[..., 0, 2] - m[..., 2, 0], m[..., 1, 0] - m[..., 0, 1]], -1),
            np.stack([m[..., 2, 1] - m[..., 1, 2], 1.0 + 2 * m[..., 0, 0] - trace, m[..., 0, 1] + m[..., 1, 0], m[..., 0, 2] + m[..., 2, 0]], -1),
            np.stack([m[..., 0, 2] - m[..., 2, 0], m[..., 0, 1] + m[..., 1, 0], 1.0 + 2 * m[..., 1, 1] - trace, m[..., 1, 2] + m[..., 2, 1]], -1),
            np.stack([m[..., 1, 0] - m[..., 0, 1], m[..., 0, 2] + m[..., 2, 0], m[..., 1, 2] + m[..., 2, 1], 1.0 + 2 * m[..., 2, 2] - trace], -1),
        ],
        axis=-2,
    )
    diagonal = np.stack([1.0 + trace, 1.0 + 2 * m[..., 0, 0] - trace, 1.0 + 2 * m[..., 1, 1] - trace, 1.0 + 2 * m[..., 2, 2] - trace], -1)
    best = np.take_along_axis(candidates, np.argmax(diagonal, axis=-1)[..., None, None], axis=-2)[..., 0, :]
    return best / np.linalg.norm(best, axis=-1, keepdims=True)


def _quaternion_to_rotation(quaternion: np.ndarray) -> np.ndarray:
    w, x, y, z = np.moveaxis(quaternion, -1, 0)
    return np.stack(
        [
            np.stack([1 - 2 * (y * y + z * z), 2 * (x * y - w * z), 2 * (x * z + w * y)], -1),
            np.stack([2 * (x * y + w * z), 1 - 2 * (x * x + z * z), 2 * (y * z - w * x)], -1),
            np.stack([2 * (x * z - w * y), 2 * (y * z + w * x), 1 - 2 * (x * x + y * y)], -1),
        ],
        axis=-2,
    )


def _slerp(start: np.ndarray, end: np.ndarray, fraction: np.ndarray) -> np.ndarray:
    """Spherical interpolation of unit quaternions along the shorter arc; ``fraction`` broadcasts."""
    cosine = np.sum(start * end, axis=-1, keepdims=True)
    end = np.where(cosine < 0.0, -end, end)
    cosine = np.abs(cosine)
    angle = np.arccos(np.clip(cosine, -1.0, 1.0))
    sine = np.sin(angle)
    nearly_parallel = sine < 1e-9
    safe_sine = np.where(nearly_parallel, 1.0, sine)
    weight_start = np.where(nearly_parallel, 1.0 - fraction, np.sin((1.0 - fraction) * angle) / safe_sine)
    weight_end = np.where(nearly_parallel, fraction, np.sin(fraction * angle) / safe_sine)
    blended = weight_start * start + weight_end * end
    return blended / np.linalg.norm(blended, axis=-1, keepdims=True)


def _latent_to_frame_interpolation(num_latents: int) -> tuple[np.ndarray, np.ndarray]:
    """For every video frame: the latent it starts from and how far (0..1) it is towards the next one."""
    num_frames = FRAMES_PER_LATENT * (num_latents - 1) + 1
    frame = np.arange(num_frames)
    start = np.minimum(frame // FRAMES_PER_LATENT, max(num_latents - 2, 0))
    fraction = (frame - FRAMES_PER_LATENT * start) / FRAMES_PER_LATENT
    return start, fraction.astype(np.float64)


def frame_poses(trajectory: Trajectory) -> np.ndarray:
    """Camera-to-world pose of every video frame, (4·(N-1)+1, 4, 4) float64, in the trajectory's world.

    Latent ``i`` lands exactly on frame ``4·i``; in between, rotation is slerped and translation lerped.
    """
    c2w = np.asarray(trajectory.c2w, dtype=np.float64)
    if c2w.shape[0] == 1:
        return c2w.copy()
    start, fraction = _latent_to_frame_interpolation(c2w.shape[0])
    quaternions = _rotation_to_quaternion(c2w[:, :3, :3])
    rotation = _quaternion_to_rotation(_slerp(quaternions[start], quaternions[start + 1], fraction[:, None]))
    translation = (1.0 - fraction[:, None]) * c2w[start, :3, 3] + fraction[:, None] * c2w[start + 1, :3, 3]
    poses = np.tile(np.eye(4), (start.shape[0], 1, 1))
    poses[:, :3, :3] = rotation
    poses[:, :3, 3] = translation
    return poses


def frame_intrinsics(trajectory: Trajectory) -> np.ndarray:
    """Normalised K of every video frame, (4·(N-1)+1, 3, 3), lerped between latents (usually constant)."""
    K_norm = normalize_intrinsics(trajectory.K)
    if K_norm.shape[0] == 1:
        return K_norm
    start, fraction = _latent_to_frame_interpolation(K_norm.shape[0])
    return (1.0 - fraction[:, None, None]) * K_norm[start] + fraction[:, None, None] * K_norm[start + 1]


def frame_actions(trajectory: Trajectory) -> np.ndarray:
    """The action to show on every video frame, (4·(N-1)+1,) int64.

    Frames ``4i-3 .. 4i`` move the camera towards latent ``i``, so they show latent ``i``'s action. Frame 0
    shows the first move too (latent 0 is always "no action"), as the official overlay does.
    """
    actions = np.asarray(trajectory.actions, dtype=np.int64)
    if actions.shape[0] == 1:
        return actions.copy()
    frame = np.arange(FRAMES_PER_LATENT * (actions.shape[0] - 1) + 1)
    return actions[np.maximum(1, -(-frame // FRAMES_PER_LATENT))]


def _as_rgb(image: np.ndarray) -> np.ndarray:
    image = np.asarray(image)
    if image.dtype != np.uint8:
        raise ValueError(f"image must be uint8, got {image.dtype}")
    if image.ndim == 2:
        image = np.repeat(image[:, :, None], 3, axis=2)
    if image.ndim != 3 or image.shape[2] not in (3, 4) or image.shape[0] < 2 or image.shape[1] < 2:
        raise ValueError(f"image must be HxWx3 (or HxWx4, HxW) with H, W >= 2, got shape {image.shape}")
    return image[:, :, :3]


def fit_image(image: np.ndarray, width: int, height: int) -> np.ndarray:
    """Centre-crop ``image`` to the ``width``:``height`` aspect ratio and resize it to exactly that size."""
    image = _as_rgb(image)
    source_height, source_width = image.shape[:2]
    if source_width * height > width * source_height:
        crop_width = max(1, round(source_height * width / height))
        left = (source_width - crop_width) // 2
        image = image[:, left : left + crop_width]
    else:
        crop_height = max(1, round(source_width * height / width))
        top = (source_height - crop_height) // 2
        image = image[top : top + crop_height]
    if image.shape[:2] == (height, width):
        return np.ascontiguousarray(image)
    return np.asarray(Image.fromarray(np.ascontiguousarray(image)).resize((width, height), Image.Resampling.LANCZOS))


class ViewRenderer:
    """Re-projects one reference image to many camera poses; per-image and per-size work is done once.

    ``render_view`` is the one-shot form; ``preview_frames`` keeps one of these for a whole trajectory.
    """

    def __init__(self, image: np.ndarray, K_norm: np.ndarray, out_size: tuple[int, int], scene: SceneDepth):
        image = _as_rgb(image)
        self.width, self.height = int(out_size[0]), int(out_size[1])
        if self.width < 1 or self.height < 1:
            raise ValueError(f"output size must be positive, got {out_size}")
        self.scene = scene
        self.source_height, self.source_width = image.shape[:2]
        self.K_source = _scaled_intrinsics(np.asarray(K_norm, dtype=np.float64), self.source_width, self.source_height)
        self.sharp = image.reshape(-1, 3).T.astype(np.float32)  # channel-planar, see _bilinear
        blur_pixels = scene.blur_radius * max(self.source_width, self.source_height)
        blurred = Image.fromarray(np.ascontiguousarray(image)).filter(ImageFilter.GaussianBlur(blur_pixels))
        self.blurred = np.asarray(blurred).reshape(-1, 3).T.astype(np.float32)
        # One-entry cache: K is almost always constant along a trajectory.
        self._rays_key: bytes | None = None
        self._rays = np.empty((3, 0), np.float32)

    def _camera_rays(self, K_norm_out: np.ndarray) -> np.ndarray:
        """Ray directions (3, H·W) through the output pixel centres, in the output camera frame (z = 1)."""
        key = np.asarray(K_norm_out, dtype=np.float64).tobytes()
        if key != self._rays_key:
            K_out = _scaled_intrinsics(K_norm_out, self.width, self.height)
            column, row = np.meshgrid(np.arange(self.width) + 0.5, np.arange(self.height) + 0.5)
            K_inverse = np.linalg.inv(K_out)
            rays = K_inverse[:, 0:1] * column.ravel() + K_inverse[:, 1:2] * row.ravel() + K_inverse[:, 2:3]
            self._rays_key, self._rays = key, rays.astype(np.float32)
        return self._rays

    def render(self, c2w_rel: np.ndarray, K_norm_out: np.ndarray | None = None) -> np.ndarray:
        """The view from ``c2w_rel`` (output camera -> reference camera, OpenCV axes) as HxWx3 uint8."""
        c2w_rel = np.asarray(c2w_rel, dtype=np.float64)
        if c2w_rel.shape != (4, 4):
            raise ValueError(f"c2w_rel must be 4x4, got shape {c2w_rel.shape}")
        K_norm_out = self.K_source_norm if K_norm_out is None else np.asarray(K_norm_out, dtype=np.float64)
        scene = self.scene

        # 1. Output pixel rays, rotated into the reference camera frame; the ray origin is the camera centre.
        # Written out rather than a matmul: a (3,3)@(3,P) product goes to multi-threaded BLAS, which costs
        # more in thread wake-ups than these nine multiply-adds.
        camera_x, camera_y, camera_z = self._camera_rays(K_norm_out)
        rotation = [[float(value) for value in row] for row in c2w_rel[:3, :3]]
        ray_x, ray_y, ray_z = (row[0] * camera_x + row[1] * camera_y + row[2] * camera_z for row in rotation)
        origin_x, origin_y, origin_z = (float(value) for value in c2w_rel[:3, 3])

        # 2. Distance along each ray to the ground plane (y = camera_height) and the backdrop (z = far_depth);
        #    the nearer positive hit wins, a ray that hits neither points behind the stage.
        with np.errstate(divide="ignore", invalid="ignore"):
            distance = (scene.camera_height - origin_y) / ray_y
            to_backdrop = (scene.far_depth - origin_z) / ray_z
        distance[~(distance > _EPSILON)] = np.inf
        to_backdrop[~(to_backdrop > _EPSILON)] = np.inf
        np.minimum(distance, to_backdrop, out=distance)
        hits = distance < np.inf
        distance[~hits] = 1.0

        # 3. Project the hit points into the reference camera (source pixel units, centres at integers).
        depth = origin_z + distance * ray_z
        in_front = hits & (depth > _EPSILON)
        # Behind the reference camera: keep the ray's sideways direction so the edge it repeats is the
        # one the camera is turning towards.
        depth[~in_front] = _EPSILON
        K = self.K_source
        source_x = (origin_x + distance * ray_x) * (float(K[0, 0]) / depth) + (float(K[0, 2]) - 0.5)
        source_y = (origin_y + distance * ray_y) * (float(K[1, 1]) / depth) + (float(K[1, 2]) - 0.5)
        return self._sample(source_x, source_y, in_front)

    @property
    def K_source_norm(self) -> np.ndarray:
        return np.diag([1.0 / self.source_width, 1.0 / self.source_height, 1.0]) @ self.K_source

    def _sample(self, source_x: np.ndarray, source_y: np.ndarray, in_front: np.ndarray) -> np.ndarray:
        """Bilinear samples at (x, y); outside the image, edge-extend fading to a blurred, darker copy."""
        width, height = self.source_width, self.source_height
        clamped_x = np.clip(source_x, 0.0, width - 1.0)
        clamped_y = np.clip(source_y, 0.0, height - 1.0)
        colour = _bilinear(self.sharp, width, clamped_x, clamped_y)  # (3, P)

        overshoot = np.maximum(np.abs(source_x - clamped_x) * (1.0 / width), np.abs(source_y - clamped_y) * (1.0 / height))
        fade = np.minimum(overshoot * (1.0 / self.scene.fade_width), 1.0)
        fade[~in_front] = 1.0
        outside = np.flatnonzero(fade > 0.0)
        if outside.size:
            weight = fade[outside]
            weight = weight * weight * (3.0 - 2.0 * weight)  # smoothstep: no visible seam at the image edge
            blurred = _bilinear(self.blurred, width, clamped_x[outside], clamped_y[outside])
            mixed = colour[:, outside] * (1.0 - weight) + blurred * weight
            colour[:, outside] = mixed * (1.0 - self.scene.outside_darkening * weight)
        frame = np.empty((self.height, self.width, 3), np.uint8)
        for channel in range(3):
            frame[:, :, channel] = (colour[channel] + 0.5).reshape(self.height, self.width)
        return frame


def _bilinear(planar_image: np.ndarray, width: int, x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Bilinear lookup in a (3, H·W) float32 image at in-range coordinates; returns (3, P) float32.

    Channel-planar so every gather is a 1-D ``take``, several times faster than gathering RGB rows.
    """
    height = planar_image.shape[1] // width
    x0 = np.minimum(x.astype(np.int32), width - 2)
    y0 = np.minimum(y.astype(np.int32), height - 2)
    # int32 and float32 would promote to float64: keep the weights in float32.
    wx = np.subtract(x, x0, dtype=np.float32)
    wy = np.subtract(y, y0, dtype=np.float32)
    top_left = y0 * width + x0
    corners = (top_left, top_left + 1, top_left + width, top_left + width + 1)
    weights = ((1.0 - wx) * (1.0 - wy), wx * (1.0 - wy), (1.0 - wx) * wy, wx * wy)
    out = np.zeros((3, x.shape[0]), np.float32)
    for channel in range(3):
        values = planar_image[channel]
        for corner, weight in zip(corners, weights):
            out[channel] += np.take(values, corner) * weight
    return out


def render_view(
    image: np.ndarray,
    c2w_rel: np.ndarray,
    K_norm: np.ndarray | None = None,
    *,
    fov: float | None = None,
    out_size: tuple[int, int] | None = None,
    scene: SceneDepth | None = None,
) -> np.ndarray:
    """Render ``image`` (taken by the reference camera) as seen from ``c2w_rel``, HxWx3 uint8.

    ``c2w_rel`` maps the new camera into the reference camera's frame (identity = the reference view).
    Intrinsics: ``K_norm`` (normalised, fx/W, fy/H), or a horizontal ``fov`` in degrees, else the official
    default; both cameras share them. ``out_size`` is (width, height) and defaults to the image size; the
    image is stretched, not cropped, if the aspect ratios differ (``fit_image`` crops first).
    """
    image = _as_rgb(image)
    width, height = out_size if out_size is not None else (image.shape[1], image.shape[0])
    if K_norm is not None and fov is not None:
        raise ValueError("give either K_norm or fov, not both")
    if fov is not None:
        K_norm = intrinsics_from_fov(fov, width, height)
    K_norm = DEFAULT_K_NORM if K_norm is None else np.asarray(K_norm, dtype=np.float64)
    return ViewRenderer(image, K_norm, (width, height), scene or SceneDepth()).render(c2w_rel, K_norm)


def preview_frames(
    image: np.ndarray,
    trajectory: Trajectory,
    width: int,
    height: int,
    hud: bool = True,
    scene: SceneDepth | None = None,
) -> Iterator[np.ndarray]:
    """Yield the 4·(N-1)+1 preview frames (HxWx3 uint8) of ``image`` flown along ``trajectory``.

    The image is centre-cropped to the output aspect ratio and resized to ``width`` x ``height``; it is the
    view of the trajectory's first camera. With ``hud``, each frame carries its action's key overlay.
    """
    if width < 2 or height < 2:
        raise ValueError(f"preview size must be at least 2x2, got {width}x{height}")
    poses = frame_poses(trajectory)
    # Everything is rendered relative to the first camera, which took the reference image.
    relative = np.linalg.inv(poses[0]) @ poses
    intrinsics = frame_intrinsics(trajectory)
    scene = (scene or SceneDepth()).for_trajectory(relative)
    renderer = ViewRenderer(fit_image(image, width, height), intrinsics[0], (width, height), scene)
    overlay = Hud(width, height) if hud else None
    actions = frame_actions(trajectory)
    for pose, K_norm, action in zip(relative, intrinsics, actions):
        frame = renderer.render(pose, K_norm)
        yield overlay.draw(frame, int(action)) if overlay is not None else frame
