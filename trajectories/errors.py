"""Errors of the trajectories package (it imports nothing of ours, so it has its own)."""

from __future__ import annotations


class TrajectoryError(ValueError):
    """A malformed or invalid trajectory: a one-line message, an optional hint. Exit code 2 in the CLI."""

    exit_code = 2

    def __init__(self, message: str, hint: str | None = None):
        super().__init__(message)
        self.message = message
        self.hint = hint
