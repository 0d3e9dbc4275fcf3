"""Reconstituted context memory: which past latents a chunk is conditioned on (≤ 20 of them).

For a chunk starting at latent c (official `select_aligned_memory_frames`):
1. c ≤ 20: every earlier latent;
2. otherwise the 12 most recent latents, the first 4, and the one 4-latent clip h ∈ {4, 8, …} (ending
   before the recent window) whose cameras best overlap the chunk's cameras. Overlap is Monte-Carlo: the
   share of a ball of points around the query camera that the query camera sees which the clip's camera
   (frames h and h+2) also sees, within 8 units, for a 60°×35° field of view.
Chunks longer than 4 latents (the bidirectional model's 16) take the union over their 4-latent starts,
minus the chunk itself.

The WAN-5B family (official `select_mem_frames_wan`) runs the same rule with a budget of 16 and no pinned
first latents (`select_wan_context_latents`): every earlier latent while c ≤ 16, then the 12 most recent
plus the best clip h ∈ {0, 4, …}, by the same overlap test.

Differences from the official code, on purpose: the point cloud comes from a seeded generator (the
official one draws from the unseeded global RNG, so two runs can pick different clips on near-ties) and can
be injected; history cameras are tested in batches, only against the points the query camera sees, and
not at all when they are out of reach of those points (their share is exactly 0 either way), so the cost
of a chunk follows the cameras near it, not the length of the video (bench/memory_selection.py).
"""

from __future__ import annotations

import math

import numpy as np
import torch

MEMORY_FRAMES = 20
WAN_MEMORY_FRAMES = 16
TEMPORAL_CONTEXT = 12
QUERY_FRAMES = 4
FIRST_FRAMES = (0, 1, 2, 3)
CLIP_LENGTH = 4
NUM_POINTS = 50_000
POINT_RADIUS = 8.0
# Field of view used for the overlap test (degrees), and the distance limit for the history camera.
FOV_HORIZONTAL = 60.0
FOV_VERTICAL = 35.0
MAX_DISTANCE = 8.0
DEFAULT_SEED = 0
DEGREES = 180.0 / math.pi
# Pruning keeps a camera unless it is this much beyond the distance limit (rounding of the bounding ball).
_PRUNE_MARGIN = 1e-6
# History cameras tested at once: bounds the [cameras, points] masks to a few MB.
_CAMERAS_PER_BATCH = 64


def sample_points_in_sphere(
    num_points: int = NUM_POINTS, radius: float = POINT_RADIUS, seed: int = DEFAULT_SEED
) -> torch.Tensor:
    """Uniform points in a ball [N, 3] float32, drawn like the official cloud but from a seeded generator."""
    generator = torch.Generator().manual_seed(seed)
    radial, azimuthal, polar = (torch.rand(num_points, generator=generator) for _ in range(3))
    r = radius * torch.pow(radial, 1 / 3)
    phi = 2 * math.pi * azimuthal
    theta = torch.acos(1 - 2 * polar)
    x = r * torch.sin(theta) * torch.cos(phi)
    y = r * torch.sin(theta) * torch.sin(phi)
    z = r * torch.cos(theta)
    return torch.stack((x, y, z), dim=1)


def select_context_latents(
    w2c: np.ndarray | torch.Tensor,
    chunk_start: int,
    chunk_latents: int = 4,
    points: np.ndarray | torch.Tensor | None = None,
    seed: int = DEFAULT_SEED,
) -> list[int]:
    """Sorted latent indices that condition the chunk [chunk_start, chunk_start + chunk_latents).

    `w2c` [N, 4, 4] world-to-camera per latent of the whole video (invert c2w poses first). `points`
    overrides the seeded point cloud ([M, 3] around the origin). Returns [] for the first chunk.
    """
    w2c = as_float64(w2c)
    points = sample_points_in_sphere(seed=seed) if points is None else torch.as_tensor(points)
    points = points.detach().cpu().to(torch.float64)
    chunk = range(chunk_start, chunk_start + chunk_latents)
    selected: set[int] = set()
    for start in range(chunk_start, chunk_start + chunk_latents, QUERY_FRAMES):
        selected.update(select_memory_frames(w2c, start, points))
    return sorted(index for index in selected if index not in chunk)


def select_wan_context_latents(
    w2c: np.ndarray | torch.Tensor,
    chunk_start: int,
    points: np.ndarray | torch.Tensor | None = None,
    seed: int = DEFAULT_SEED,
) -> list[int]:
    """Sorted latent indices that condition the WAN-5B chunk [chunk_start, chunk_start + 4) (≤ 16 of them);
    arguments as `select_context_latents`."""
    points = sample_points_in_sphere(seed=seed) if points is None else torch.as_tensor(points)
    points = points.detach().cpu().to(torch.float64)
    return select_memory_frames(as_float64(w2c), chunk_start, points, WAN_MEMORY_FRAMES, first_frames=())


def select_memory_frames(
    w2c: torch.Tensor,
    current: int,
    points: torch.Tensor,
    memory_frames: int = MEMORY_FRAMES,
    temporal_context: int = TEMPORAL_CONTEXT,
    first_frames: tuple[int, ...] = FIRST_FRAMES,
) -> list[int]:
    """The official selection for one 4-latent start `current` (w2c float64 [N, 4, 4], points float64);
    `first_frames` are always kept (the HunyuanVideo family's first clip; none for WAN-5B)."""
    if current <= memory_frames:
        return list(range(current))
    total = w2c.shape[0]
    if current >= total:
        raise ValueError(f"chunk start {current} is beyond the trajectory's {total} latents")
    recent = list(range(max(0, current - temporal_context), current))
    queries = range(current, min(current + QUERY_FRAMES, total))
    candidates = [start for start in range(0, current - temporal_context, CLIP_LENGTH) if start not in first_frames]
    # 1. distance of each candidate clip: mean over query frames of the non-overlap with frames h and h+2
    history = [frame for start in candidates for frame in (start, start + 2)]
    overlaps = [fov_overlaps(w2c[query], w2c[history], points) for query in queries] if history else []
    distances = []
    for position, start in enumerate(candidates):
        total_distance = 0.0
        for per_query in overlaps:
            first, second = 1.0 - per_query[2 * position], 1.0 - per_query[2 * position + 1]
            total_distance += (first + second) / 2.0
        distances.append((start, total_distance / len(queries)))
    # 2. fill the memory budget with the closest clips; the sort is stable, so ties go to the earlier clip
    memory = list(first_frames)
    budget = memory_frames - temporal_context
    for start, _ in sorted(distances, key=lambda item: item[1]):
        if len(memory) >= budget:
            break
        if start not in memory:
            memory.extend(range(start, start + CLIP_LENGTH))
    return sorted(set(recent) | set(memory))


def fov_overlaps(w2c_query: torch.Tensor, w2c_history: torch.Tensor, points: torch.Tensor) -> list[float]:
    """For each history camera [K, 4, 4]: the share of the points seen by the query camera that the history
    camera also sees (0 if the query camera sees none).

    Only the points the query camera sees can count, so the history cameras are tested against those alone
    (a twentieth of the cloud for a 60°×35° view), and a history camera too far from all of them to pass the
    distance limit is not tested at all: its share is exactly 0. The per-point arithmetic is the official
    one, so the shares are the same."""
    # 1. all cameras in the query camera's frame (the query camera becomes the identity up to rounding)
    query_pose = torch.linalg.inv(w2c_query @ torch.linalg.inv(w2c_query))
    history_poses = torch.linalg.inv(w2c_query @ torch.linalg.inv(w2c_history))
    query_center, query_pitch, query_yaw = camera_center_and_angles(query_pose)
    # 2. the ball of points around the query camera, and the part of it the query camera sees
    world_points = points + query_center
    seen_points = world_points[inside_fov(world_points, query_center, query_pitch, query_yaw)]
    seen = seen_points.shape[0]
    if seen == 0:
        return [0.0] * len(w2c_history)
    # 3. prune: a camera farther than MAX_DISTANCE from the seen points' bounding ball sees none of them
    centers, pitches, yaws = camera_center_and_angles(history_poses)
    middle = seen_points.mean(dim=0)
    radius = torch.linalg.norm(seen_points - middle, dim=1).max()
    reachable = torch.linalg.norm(centers - middle, dim=1) < radius + MAX_DISTANCE + _PRUNE_MARGIN
    counts = torch.zeros(len(w2c_history), dtype=torch.int64)
    # 4. the rest against the seen points in batches of cameras: [cameras, points] masks
    candidates = reachable.nonzero().flatten()
    for batch in candidates.split(_CAMERAS_PER_BATCH):
        center = centers[batch, None, :]
        in_history = inside_fov(seen_points, center, pitches[batch, None], yaws[batch, None])
        in_history &= torch.linalg.norm(seen_points - center, dim=-1) < MAX_DISTANCE
        counts[batch] = in_history.sum(dim=1)
    # the official ratio is a float32 division
    return (counts.to(torch.float32) / torch.tensor(seen, dtype=torch.float32)).tolist()


def camera_center_and_angles(w2c: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Camera centre −Rᵀt and the forward axis' pitch and yaw in degrees (OpenCV axes, z forward), for one
    world-to-camera matrix [4, 4] or a batch [K, 4, 4]."""
    rotation, translation = w2c[..., :3, :3], w2c[..., :3, 3]
    rotation_t = rotation.transpose(-1, -2)
    center = -(rotation_t @ translation[..., None])[..., 0]
    forward = rotation_t[..., :, 2]
    yaw = torch.atan2(forward[..., 0], forward[..., 2]) * DEGREES
    pitch = torch.atan2(forward[..., 1], torch.sqrt(forward[..., 0] ** 2 + forward[..., 2] ** 2)) * DEGREES
    return center, pitch, yaw


def inside_fov(points: torch.Tensor, center: torch.Tensor, pitch: torch.Tensor, yaw: torch.Tensor) -> torch.Tensor:
    """Which points [..., 3] lie in the angular box of a camera at `center` looking at (`pitch`, `yaw`);
    the camera's tensors broadcast against the points' leading dimensions."""
    vectors = points - center
    x, y, z = vectors.unbind(dim=-1)
    azimuth = torch.atan2(x, z) * DEGREES
    elevation = torch.atan2(y, torch.sqrt(x**2 + z**2)) * DEGREES
    azimuth_offset = torch.remainder(azimuth - yaw + 180, 360) - 180
    elevation_offset = torch.remainder(elevation - pitch + 180, 360) - 180
    return (azimuth_offset.abs() < FOV_HORIZONTAL / 2) & (elevation_offset.abs() < FOV_VERTICAL / 2)


def as_float64(matrices: np.ndarray | torch.Tensor) -> torch.Tensor:
    matrices = torch.as_tensor(matrices) if not torch.is_tensor(matrices) else matrices.detach()
    if matrices.ndim != 3 or matrices.shape[1:] != (4, 4):
        raise ValueError(f"expected w2c matrices of shape [N, 4, 4], got {tuple(matrices.shape)}")
    return matrices.cpu().to(torch.float64)
