"""A small top-down (x right, z forward up the page) picture of a camera path, drawn with characters."""

from __future__ import annotations

import math

import numpy as np

from trajectories.model import Trajectory

# Eight heading arrows, clockwise from "forward" (+z, up the page).
_ARROWS = "↑↗→↘↓↙←↖"
# A terminal cell is about twice as tall as it is wide.
_CELL_ASPECT = 2.0


def heading_arrow(yaw_degrees: float) -> str:
    """The arrow closest to a yaw (0 = forward/up the page, +90 = right)."""
    return _ARROWS[int(round((yaw_degrees % 360.0) / 45.0)) % 8]


def top_down_plot(trajectory: Trajectory, width: int = 48, height: int = 14) -> list[str]:
    """Lines of a width x height character plot: '·' path, 'o' start, an arrow for the final heading.

    The camera's forward vector is projected onto the ground (x-z) plane for the heading, so the
    picture stays right when the camera is pitched.
    """
    positions = trajectory.positions()[:, [0, 2]]
    low, high = positions.min(axis=0), positions.max(axis=0)
    span = high - low
    columns_per_unit = min(
        (width - 1) / span[0] if span[0] > 0 else math.inf,
        _CELL_ASPECT * (height - 1) / span[1] if span[1] > 0 else math.inf,
    )
    if not math.isfinite(columns_per_unit):
        columns_per_unit = 0.0
    centre = (low + high) / 2
    grid = [[" "] * width for _ in range(height)]

    def cell(point: np.ndarray) -> tuple[int, int]:
        column = int(round((width - 1) / 2 + (point[0] - centre[0]) * columns_per_unit))
        row = int(round((height - 1) / 2 - (point[1] - centre[1]) * columns_per_unit / _CELL_ASPECT))
        return min(max(row, 0), height - 1), min(max(column, 0), width - 1)

    # Densify between latents so a fast path still draws a connected line.
    for start, end in zip(positions[:-1], positions[1:]):
        steps = max(2, int(np.abs(end - start).max() * columns_per_unit) + 2)
        for fraction in np.linspace(0.0, 1.0, steps):
            row, column = cell(start + (end - start) * fraction)
            grid[row][column] = "·"
    forward = trajectory.c2w[-1][:3, 2]
    yaw = math.degrees(math.atan2(forward[0], forward[2]))
    row, column = cell(positions[0])
    grid[row][column] = "o"
    row, column = cell(positions[-1])
    grid[row][column] = heading_arrow(yaw)
    return ["".join(line).rstrip() for line in grid]
