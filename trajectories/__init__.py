"""Camera trajectories for WorldPlay (torch-free)."""

from trajectories.errors import TrajectoryError

__all__ = ["TrajectoryError"]
