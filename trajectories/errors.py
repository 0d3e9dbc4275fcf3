"""Errors of the trajectories package, and the one shape every expected error of the project has.

`HintedError` is a one-line `message` and an optional `hint` saying what to do about it. trajectories
imports nothing of ours, so the base lives here; the CLI's `WorldplayError` and the worker's
`GenerationError`, `ModelDirError` and `CheckpointError` derive from it.
"""

from __future__ import annotations


class HintedError(Exception):
    """An expected failure: a user-facing `message` and an optional `hint`. `str()` is the message, or
    `message (hint: hint)` for errors that travel as plain text (`show_hint = True`)."""

    show_hint = False

    def __init__(self, message: str, hint: str | None = None):
        super().__init__(message)
        self.message = message
        self.hint = hint

    def __str__(self) -> str:
        if self.show_hint and self.hint:
            return f"{self.message} (hint: {self.hint})"
        return self.message


class TrajectoryError(HintedError, ValueError):
    """A malformed or invalid trajectory: a one-line message, an optional hint. Exit code 2 in the CLI."""

    exit_code = 2
