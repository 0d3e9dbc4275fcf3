"""Revisit consistency: where the trajectory comes back near an earlier pose after going away, the two views
should show the same world. Pairs are found from the poses alone (never from the pixels):
- a later frame j and an earlier frame i are *near* when their rotations differ by at most `NEAR_DEG` and their
  positions by at most `NEAR_DISTANCE` (trajectory units; a w step is 0.08);
- the camera must have *gone away* in between: some frame between them is at least `AWAY_DEG` or
  `AWAY_DISTANCE` from frame i (otherwise a camera standing still would count as revisiting);
- per later frame the nearest earlier frame is kept, on latent frames only (every 4th frame).
Each pair is scored with PSNR and SSIM between the two frames; the higher, the more the world stayed put.
"""

from __future__ import annotations

import numpy as np

from trajectories.evaluation.images import psnr, ssim

NEAR_DEG = 2.0
NEAR_DISTANCE = 0.02
AWAY_DEG = 10.0
AWAY_DISTANCE = 0.25
FRAMES_PER_LATENT = 4


def _rotation_deg(first: np.ndarray, second: np.ndarray) -> np.ndarray:
    """Angles (degrees) between one rotation [3, 3] and many [N, 3, 3]."""
    cosine = (np.einsum("ij,nij->n", first, second) - 1.0) / 2.0
    return np.degrees(np.arccos(np.clip(cosine, -1.0, 1.0)))


def revisit_pairs(poses: np.ndarray) -> list[tuple[int, int, float, float]]:
    """(earlier, later, rotation apart in degrees, distance apart) of every revisit in camera-to-world poses."""
    frames = np.arange(0, len(poses), FRAMES_PER_LATENT)
    pairs = []
    for later in frames:
        best = None
        for earlier in frames[frames < later]:
            rotation = _rotation_deg(poses[earlier, :3, :3], poses[[later], :3, :3])[0]
            distance = float(np.linalg.norm(poses[later, :3, 3] - poses[earlier, :3, 3]))
            if rotation > NEAR_DEG or distance > NEAR_DISTANCE:
                continue
            between = poses[earlier + 1 : later]
            away = (_rotation_deg(poses[earlier, :3, :3], between[:, :3, :3]) >= AWAY_DEG) | (
                np.linalg.norm(between[:, :3, 3] - poses[earlier, :3, 3], axis=1) >= AWAY_DISTANCE
            )
            if not away.any():
                continue
            score = rotation / NEAR_DEG + distance / NEAR_DISTANCE
            if best is None or score < best[0]:
                best = (score, int(earlier), float(rotation), distance)
        if best is not None:
            pairs.append((best[1], int(later), best[2], best[3]))
    return pairs


def revisit_consistency(frames: np.ndarray, poses: np.ndarray) -> dict:
    pairs = [
        {
            "earlier": earlier,
            "later": later,
            "rotation_apart_deg": rotation,
            "distance_apart": distance,
            "psnr": psnr(frames[later], frames[earlier]),
            "ssim": ssim(frames[later : later + 1], frames[earlier : earlier + 1]),
        }
        for earlier, later, rotation, distance in revisit_pairs(poses[: len(frames)])
    ]
    finite = [pair["psnr"] for pair in pairs if np.isfinite(pair["psnr"])]
    return {
        "pairs": pairs,
        "count": len(pairs),
        "psnr": (float(np.mean(finite)) if finite else float("inf")) if pairs else None,
        "ssim": float(np.mean([pair["ssim"] for pair in pairs])) if pairs else None,
    }
