"""Reconstituted context memory: which past latents a chunk is conditioned on (≤ 20 of them).

For a chunk starting at latent c (official `select_aligned_memory_frames`):
1. c ≤ 20: every earlier latent;
2. otherwise the 12 most recent latents, the first 4, and the one 4-latent clip h ∈ {4, 8, …} (ending
   before the recent window) whose cameras best overlap the chunk's cameras. Overlap is Monte-Carlo: the
   share of a ball of points around the query camera that the query camera sees which the clip's camera
   (frames h and h+2) also sees, within 8 units, for a 60°×35° field of view.
Chunks longer than 4 latents (the bidirectional model's 16) take the union over their 4-latent starts,
minus the chunk itself.

Differences from the official code, on purpose: the point cloud comes from a seeded generator (the
official one draws from the unseeded global RNG, so two runs can pick different clips on near-ties) and can
be injected; the overlap is evaluated for all points at once.
"""

from __future__ import annotations

import math

import numpy as np
import torch

MEMORY_FRAMES = 20
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


def select_memory_frames(
    w2c: torch.Tensor,
    current: int,
    points: torch.Tensor,
    memory_frames: int = MEMORY_FRAMES,
    temporal_context: int = TEMPORAL_CONTEXT,
) -> list[int]:
    """The official selection for one 4-latent start `current` (w2c float64 [N, 4, 4], points float64)."""
    if current <= memory_frames:
        return list(range(current))
    total = w2c.shape[0]
    if current >= total:
        raise ValueError(f"chunk start {current} is beyond the trajectory's {total} latents")
    recent = list(range(max(0, current - temporal_context), current))
    queries = range(current, min(current + QUERY_FRAMES, total))
    candidates = range(CLIP_LENGTH, current - temporal_context, CLIP_LENGTH)
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
    memory = list(FIRST_FRAMES)
    budget = memory_frames - temporal_context
    for start, _ in sorted(distances, key=lambda item: item[1]):
        if len(memory) >= budget:
            break
        if start not in memory:
            memory.extend(range(start, start + CLIP_LENGTH))
    return sorted(set(recent) | set(memory))


def fov_overlaps(w2c_query: torch.Tensor, w2c_history: torch.Tensor, points: torch.Tensor) -> list[float]:
    """For each history camera [K, 4, 4]: the share of the points seen by the query camera that the history
    camera also sees (0 if the query camera sees none)."""
    # 1. all cameras in the query camera's frame (the query camera becomes the identity up to rounding)
    query_pose = torch.linalg.inv(w2c_query @ torch.linalg.inv(w2c_query))
    history_poses = torch.linalg.inv(w2c_query @ torch.linalg.inv(w2c_history))
    query_center, query_pitch, query_yaw = camera_center_and_angles(query_pose)
    # 2. the ball of points around the query camera, tested against every frustum
    world_points = points + query_center
    in_query = inside_fov(world_points, query_center, query_pitch, query_yaw)
    seen = int(in_query.sum())
    if seen == 0:
        return [0.0] * len(w2c_history)
    overlaps = []
    for pose in history_poses:
        center, pitch, yaw = camera_center_and_angles(pose)
        in_history = inside_fov(world_points, center, pitch, yaw)
        in_history &= torch.linalg.norm(world_points - center, dim=1) < MAX_DISTANCE
        # the official ratio is a float32 division
        overlaps.append(float(np.float32(int((in_query & in_history).sum())) / np.float32(seen)))
    return overlaps


def camera_center_and_angles(w2c: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Camera centre −Rᵀt and the forward axis' pitch and yaw in degrees (OpenCV axes, z forward)."""
    rotation, translation = w2c[:3, :3], w2c[:3, 3]
    center = -rotation.T @ translation
    forward = rotation.T[:, 2]
    yaw = torch.atan2(forward[0], forward[2]) * DEGREES
    pitch = torch.atan2(forward[1], torch.sqrt(forward[0] ** 2 + forward[2] ** 2)) * DEGREES
    return center, pitch, yaw


def inside_fov(points: torch.Tensor, center: torch.Tensor, pitch: torch.Tensor, yaw: torch.Tensor) -> torch.Tensor:
    vectors = points - center
    x, y, z = vectors.unbind(dim=1)
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
