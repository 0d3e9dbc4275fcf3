"""Preview rendering: re-project one reference image along a camera trajectory (numpy + PIL, no torch).

The preview engine has no model, so it fakes the video a model would make by warping the reference
image as if the scene were a simple 3-D stage seen from each camera pose:

- **Rotation** is exact: a pure rotation between two pinhole cameras is the homography
  ``K_out · Rᵀ · K_ref⁻¹``, whatever the scene depth.
- **Translation** needs depth, so we assume one: a ground plane ``camera_height`` below the reference
  camera (OpenCV axes, +y is down) and a vertical backdrop plane ``far_depth`` ahead of it. Each output
  ray is intersected with whichever plane it meets first; the hit point is projected into the reference
  camera. Walking forward therefore zooms the backdrop gently and streams the ground past quickly.
- **Outside the reference image** (turned away, walked back) the frame shows fog: the colours of the
  covered part spread outward and blurred (push-pull on a coarse grid), fading with distance into a
  greyed sky tone above the horizon and ground tone below, both taken from the image. The nearest edge
  is repeated for the first ``fade_width`` past the border so there is no seam. Covered pixels are the
  plain bilinear samples, untouched by the fill. ``render_with_coverage`` also says how much of the frame
  is fog; ``trajectories.coverage`` works that out for a whole trajectory without rendering.

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
# float32 rays put the outermost pixel centres of an unmoved view a hair past the edge; that is still inside.
_ROUNDING_SLACK = 1e-4

# Above this fraction of a frame outside the reference image, the preview is mostly guesswork: the HUD
# says so and ``trajectories.coverage.coverage_warning`` warns.
MOSTLY_UNCOVERED = 0.5

# The fill of uncovered areas: worked out on a grid this many cells long, blurred by this fraction of it.
_FILL_CELLS = 96
_FILL_BLUR = 0.02
# How far the fog tones move towards grey, and the elevation (sine) over which sky fog blends into ground fog.
_FOG_GREYING = 0.35
_FOG_HORIZON = 0.15


@dataclass(frozen=True)
class SceneDepth:
    """The stage the reference image is painted on, in trajectory units (a pose-string step is 0.08)."""

    camera_height: float = 1.0
    far_depth: float = 4.0
    # Past the image edge, the repeated edge pixels give way to the fill over this fraction of the image size.
    fade_width: float = 0.04
    # The covered part's spread colours fade into the fog over about this fraction of the frame.
    fill_reach: float = 0.2

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
            np.stack(
                [1.0 + trace, m[..., 2, 1] - m[..., 1, 2], m[..., 0, 2] - m[..., 2, 0], m[..., 1, 0] - m[..., 0, 1]], -1
            ),
            np.stack(
                [
                    m[..., 2, 1] - m[..., 1, 2],
                    1.0 + 2 * m[..., 0, 0] - trace,
                    m[..., 0, 1] + m[..., 1, 0],
                    m[..., 0, 2] + m[..., 2, 0],
                ],
                -1,
            ),
            np.stack(
                [
                    m[..., 0, 2] - m[..., 2, 0],
                    m[..., 0, 1] + m[..., 1, 0],
                    1.0 + 2 * m[..., 1, 1] - trace,
                    m[..., 1, 2] + m[..., 2, 1],
                ],
                -1,
            ),
            np.stack(
                [
                    m[..., 1, 0] - m[..., 0, 1],
                    m[..., 0, 2] + m[..., 2, 0],
                    m[..., 1, 2] + m[..., 2, 1],
                    1.0 + 2 * m[..., 2, 2] - trace,
                ],
                -1,
            ),
        ],
        axis=-2,
    )
    diagonal = np.stack(
        [1.0 + trace, 1.0 + 2 * m[..., 0, 0] - trace, 1.0 + 2 * m[..., 1, 1] - trace, 1.0 + 2 * m[..., 2, 2] - trace],
        -1,
    )
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


class Reprojection:
    """Where each output pixel's ray meets the stage, as a position in the reference image.

    Holds the per-size work (pixel rays, one entry per output K); ``ViewRenderer`` samples colours at the
    positions, ``trajectories.coverage`` only counts how many land inside the image.
    """

    def __init__(self, K_norm: np.ndarray, source_size: tuple[int, int], out_size: tuple[int, int], scene: SceneDepth):
        self.source_width, self.source_height = int(source_size[0]), int(source_size[1])
        self.width, self.height = int(out_size[0]), int(out_size[1])
        if self.width < 1 or self.height < 1:
            raise ValueError(f"output size must be positive, got {out_size}")
        self.scene = scene
        self.K_source = _scaled_intrinsics(np.asarray(K_norm, dtype=np.float64), self.source_width, self.source_height)
        # Keyed by output K, then grid size; K is almost always constant along a trajectory.
        self._rays_key: bytes | None = None
        self._rays: dict[tuple[int, int], np.ndarray] = {}

    @property
    def K_source_norm(self) -> np.ndarray:
        return np.diag([1.0 / self.source_width, 1.0 / self.source_height, 1.0]) @ self.K_source

    def _camera_rays(self, K_norm_out: np.ndarray, grid: tuple[int, int]) -> np.ndarray:
        """Ray directions (3, w·h) through the centres of a ``grid`` = (w, h) of cells covering the output
        frame, in the output camera frame (z = 1)."""
        key = np.asarray(K_norm_out, dtype=np.float64).tobytes()
        if key != self._rays_key:
            self._rays_key, self._rays = key, {}
        if grid not in self._rays:
            K_inverse = np.linalg.inv(_scaled_intrinsics(K_norm_out, self.width, self.height))
            column, row = np.meshgrid(
                (np.arange(grid[0]) + 0.5) * (self.width / grid[0]),
                (np.arange(grid[1]) + 0.5) * (self.height / grid[1]),
            )
            rays = K_inverse[:, 0:1] * column.ravel() + K_inverse[:, 1:2] * row.ravel() + K_inverse[:, 2:3]
            self._rays[grid] = rays.astype(np.float32)
        return self._rays[grid]

    def rays(
        self, c2w_rel: np.ndarray, K_norm_out: np.ndarray, grid: tuple[int, int] | None = None
    ) -> tuple[np.ndarray, ...]:
        """The output pixel rays (or those of a coarser ``grid``) rotated into the reference camera frame."""
        # Written out rather than a matmul: a (3,3)@(3,P) product goes to multi-threaded BLAS, which costs
        # more in thread wake-ups than these nine multiply-adds.
        camera_x, camera_y, camera_z = self._camera_rays(K_norm_out, grid or (self.width, self.height))
        rotation = [[float(value) for value in row] for row in c2w_rel[:3, :3]]
        return tuple(row[0] * camera_x + row[1] * camera_y + row[2] * camera_z for row in rotation)

    def project(self, c2w_rel: np.ndarray, K_norm_out: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Source pixel coordinates (x, y, centres at integers) of every output pixel, and whether its ray
        meets the stage in front of the reference camera; all flat (H·W,)."""
        c2w_rel = np.asarray(c2w_rel, dtype=np.float64)
        if c2w_rel.shape != (4, 4):
            raise ValueError(f"c2w_rel must be 4x4, got shape {c2w_rel.shape}")
        scene = self.scene
        # 1. Output pixel rays in the reference camera frame; the ray origin is the camera centre.
        ray_x, ray_y, ray_z = self.rays(c2w_rel, K_norm_out)
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
        return source_x, source_y, in_front

    def overshoot(self, source_x: np.ndarray, source_y: np.ndarray, in_front: np.ndarray) -> np.ndarray:
        """How far past the image edge each projected pixel lands, as a fraction of the image size: 0 inside
        (between the outermost pixel centres), inf for rays that meet nothing in front of the camera."""
        width, height = self.source_width, self.source_height
        beyond_x = np.maximum(np.maximum(-source_x, source_x - (width - 1.0)), 0.0) * (1.0 / width)
        beyond_y = np.maximum(np.maximum(-source_y, source_y - (height - 1.0)), 0.0) * (1.0 / height)
        overshoot = np.maximum(beyond_x, beyond_y)
        overshoot[~in_front] = np.inf
        return overshoot

    def covered(self, source_x: np.ndarray, source_y: np.ndarray, in_front: np.ndarray) -> np.ndarray:
        """Which projected pixels land inside the reference image."""
        return self.overshoot(source_x, source_y, in_front) <= _ROUNDING_SLACK


class ViewRenderer:
    """Re-projects one reference image to many camera poses; per-image and per-size work is done once.

    ``render_view`` is the one-shot form; ``preview_frames`` keeps one of these for a whole trajectory.
    """

    def __init__(self, image: np.ndarray, K_norm: np.ndarray, out_size: tuple[int, int], scene: SceneDepth):
        image = _as_rgb(image)
        self.reprojection = Reprojection(K_norm, (image.shape[1], image.shape[0]), out_size, scene)
        self.width, self.height = self.reprojection.width, self.reprojection.height
        self.scene = scene
        self.source_height, self.source_width = image.shape[:2]
        self.sharp = image.reshape(-1, 3).T.astype(np.float32)  # channel-planar, see _bilinear
        # The unknown fades towards a fog of the photo's own sky and ground colours: it still reads as the
        # same scene, but clearly not as something the photo shows.
        horizon = min(max(round(float(self.reprojection.K_source[1, 2])), 1), self.source_height - 1)
        tones = np.stack([image[:horizon].reshape(-1, 3).mean(axis=0), image[horizon:].reshape(-1, 3).mean(axis=0)])
        grey = tones @ np.array([0.299, 0.587, 0.114])
        self.fog = ((1.0 - _FOG_GREYING) * tones + _FOG_GREYING * grey[:, None]).astype(np.float32)  # (sky, ground)
        # The fill is worked out on a grid of about _FILL_CELLS cells along the longer side, then upsampled.
        cell = max(1, round(max(self.width, self.height) / _FILL_CELLS))
        self.fill_grid = (-(-self.width // cell), -(-self.height // cell))

    @property
    def K_source_norm(self) -> np.ndarray:
        return self.reprojection.K_source_norm

    def render(self, c2w_rel: np.ndarray, K_norm_out: np.ndarray | None = None) -> np.ndarray:
        """The view from ``c2w_rel`` (output camera -> reference camera, OpenCV axes) as HxWx3 uint8."""
        return self.render_with_coverage(c2w_rel, K_norm_out)[0]

    def render_with_coverage(
        self, c2w_rel: np.ndarray, K_norm_out: np.ndarray | None = None
    ) -> tuple[np.ndarray, float]:
        """``render``, plus the fraction of the frame that lies outside the reference image."""
        c2w_rel = np.asarray(c2w_rel, dtype=np.float64)
        K_norm_out = self.K_source_norm if K_norm_out is None else np.asarray(K_norm_out, dtype=np.float64)
        source_x, source_y, in_front = self.reprojection.project(c2w_rel, K_norm_out)
        width, height = self.source_width, self.source_height
        clamped_x = np.clip(source_x, 0.0, width - 1.0)
        clamped_y = np.clip(source_y, 0.0, height - 1.0)
        colour = _bilinear(self.sharp, width, clamped_x, clamped_y)  # (3, P); outside: the nearest edge repeated

        overshoot = self.reprojection.overshoot(source_x, source_y, in_front)
        covered = overshoot <= _ROUNDING_SLACK
        outside = np.flatnonzero(~covered)
        if outside.size:
            # The repeated edge streaks along the projection, so it only bridges into the fill, over fade_width.
            weight = np.minimum(overshoot[outside] * (1.0 / self.scene.fade_width), 1.0)
            weight = weight * weight * (3.0 - 2.0 * weight)  # smoothstep: no visible seam at the image edge
            fill = self._fill(colour, covered, c2w_rel, K_norm_out).transpose(2, 0, 1).reshape(3, -1)
            fill = np.take(fill, outside, axis=1)  # a planar gather: ~3x faster than picking RGB rows
            colour[:, outside] += (fill - colour[:, outside]) * weight
        frame = np.empty((self.height, self.width, 3), np.uint8)
        for channel in range(3):
            frame[:, :, channel] = (colour[channel] + 0.5).reshape(self.height, self.width)
        return frame, outside.size / overshoot.size

    def _fill(self, colour: np.ndarray, covered: np.ndarray, c2w_rel: np.ndarray, K_norm_out: np.ndarray) -> np.ndarray:
        """What to show where the photo says nothing, HxWx3 uint8: the covered part's colours spread outward
        and blurred, fading with distance from it into the fog (sky tone above the horizon, ground below).

        Worked out on the coarse ``fill_grid`` and upsampled: it is smooth by design, so nothing is lost.
        """
        grid = self.fill_grid
        ray_x, ray_y, ray_z = self.reprojection.rays(c2w_rel, K_norm_out, grid)
        upward = -ray_y / np.sqrt(ray_x * ray_x + ray_y * ray_y + ray_z * ray_z)
        sky = np.clip(upward * (0.5 / _FOG_HORIZON) + 0.5, 0.0, 1.0)
        sky = sky * sky * (3.0 - 2.0 * sky)
        fill = (self.fog[1][:, None] + (self.fog[0] - self.fog[1])[:, None] * sky).reshape(3, grid[1], grid[0])

        known = _resize(covered.astype(np.float32).reshape(1, self.height, self.width), grid, Image.Resampling.BOX)
        if known.any():
            premultiplied = colour.reshape(3, self.height, self.width) * covered.reshape(self.height, self.width)
            premultiplied = _resize(premultiplied, grid, Image.Resampling.BOX)
            spread = _push_pull(np.concatenate([premultiplied, known]))
            # Blurring the coverage gives a cheap distance: ~0.5 on the covered boundary, falling to 0 about
            # fill_reach away, so the spread colours keep only near what they came from.
            reach = self.scene.fill_reach * max(grid)
            near = Image.fromarray((known[0] * 255.0 + 0.5).astype(np.uint8)).filter(ImageFilter.GaussianBlur(reach))
            keep = np.clip(np.asarray(near) * (2.0 / 255.0), 0.0, 1.0)
            keep = keep * keep * (3.0 - 2.0 * keep)
            fill = fill + (spread - fill) * keep
        fill = Image.fromarray((np.clip(fill, 0.0, 255.0) + 0.5).astype(np.uint8).transpose(1, 2, 0))
        fill = fill.filter(ImageFilter.GaussianBlur(_FILL_BLUR * max(grid)))
        return np.asarray(fill.resize((self.width, self.height), Image.Resampling.BILINEAR))


def _resize(planes: np.ndarray, size: tuple[int, int], resample: Image.Resampling) -> np.ndarray:
    """Resize each plane of a (C, h, w) float32 stack to ``size`` = (w, h) (PIL's "F" mode, no rounding)."""
    planes = np.ascontiguousarray(planes, np.float32)
    return np.stack([np.asarray(Image.fromarray(plane).resize(size, resample)) for plane in planes])


def _push_pull(premultiplied: np.ndarray) -> np.ndarray:
    """Fill the holes of a (3 colour · weight, weight) stack with the colours of the nearest known cells.

    Push: halve the resolution until one cell is left, averaging colour and weight. Pull: back up, keep
    each level's own colour where it is known and the coarser level's (upsampled) elsewhere, so every hole
    gets the average of what surrounds it at the scale where something does. Needs one known cell.
    """
    levels = [premultiplied]
    while max(levels[-1].shape[1:]) > 1:
        height, width = levels[-1].shape[1:]
        levels.append(_resize(levels[-1], (-(-width // 2), -(-height // 2)), Image.Resampling.BOX))
    filled = levels[-1][:3] / levels[-1][3]
    for level in reversed(levels[:-1]):
        known = level[3]
        own = level[:3] / np.maximum(known, _EPSILON)
        coarser = _resize(filled, (level.shape[2], level.shape[1]), Image.Resampling.BILINEAR)
        # A cell a quarter covered already has a fair colour of its own; trusting it from there keeps the
        # spread colours close to the edge they continue.
        trust = np.minimum(known * 4.0, 1.0)
        filled = coarser + (own - coarser) * trust
    return filled


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
    view of the trajectory's first camera. With ``hud``, each frame carries its action's key overlay, and
    frames more than ``MOSTLY_UNCOVERED`` outside the reference image say by how much.
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
        frame, uncovered = renderer.render_with_coverage(pose, K_norm)
        if overlay is not None:
            frame = overlay.draw(frame, int(action), uncovered if uncovered > MOSTLY_UNCOVERED else None)
        yield frame
