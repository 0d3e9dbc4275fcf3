"""How much of each view a trajectory leaves outside the reference image (numpy only, no torch).

Only what the reference image shows is known; the preview fills the rest with fog and the model has to
invent it. A trajectory that turns or backs far enough away spends most of its frames inventing, which
is worth knowing before a run, so ``coverage_warning`` says so in one line.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

import numpy as np

from trajectories.render import (
    MOSTLY_UNCOVERED,
    Reprojection,
    SceneDepth,
    normalize_intrinsics,
)

if TYPE_CHECKING:
    from trajectories import Trajectory

# Longest side of the grid the views are sampled on. With normalised intrinsics the fraction depends on
# the output's aspect ratio, not its size, and this many pixels already give it to well under 1 %.
_GRID = 128

# Past this rotation from the reference camera, turning (not walking) is what left the image behind.
_TURN_DEGREES = 30.0


def uncovered_fractions(trajectory: Trajectory, width: int, height: int, scene: SceneDepth | None = None) -> np.ndarray:
    """Fraction (0..1) of each latent's view that lies outside the reference image, (N,) float64.

    ``width`` x ``height`` is the output size (only its aspect ratio matters); ``scene`` is the preview's
    stage, which decides how far walking reveals new ground.
    """
    if width < 1 or height < 1:
        raise ValueError(f"output size must be positive, got {width}x{height}")
    c2w = np.asarray(trajectory.c2w, dtype=np.float64)
    relative = np.linalg.inv(c2w[0]) @ c2w
    intrinsics = normalize_intrinsics(trajectory.K)
    scale = min(1.0, _GRID / max(width, height))
    size = (max(2, round(width * scale)), max(2, round(height * scale)))
    reprojection = Reprojection(intrinsics[0], size, size, (scene or SceneDepth()).for_trajectory(relative))
    return np.array(
        [
            1.0 - float(reprojection.covered(*reprojection.project(pose, K)).mean())
            for pose, K in zip(relative, intrinsics)
        ]
    )


def coverage_warning(trajectory: Trajectory, width: int, height: int, scene: SceneDepth | None = None) -> str | None:
    """One line for the user when some latent's view is more than half outside the reference image, else None."""
    fractions = uncovered_fractions(trajectory, width, height, scene)
    worst = int(np.argmax(fractions))
    if fractions[worst] <= MOSTLY_UNCOVERED:
        return None
    start = int(np.argmax(fractions > MOSTLY_UNCOVERED))
    c2w = np.asarray(trajectory.c2w, dtype=np.float64)
    rotation = c2w[0, :3, :3].T @ c2w[start, :3, :3]
    turned = math.degrees(math.acos(np.clip((np.trace(rotation) - 1.0) / 2.0, -1.0, 1.0)))
    advice = "a shorter orbit or a smaller turn" if turned >= _TURN_DEGREES else "fewer steps back or to the side"
    return (
        f"starting at latent {start}, most of the view lies outside the reference image ({fractions[worst]:.0%} at "
        f"latent {worst}) and the model has to invent it; try {advice}, or end the trajectory before latent {start}"
    )
