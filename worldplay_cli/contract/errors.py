"""The one error type the CLI formats, and the one formatter.

Library code raises `WorldplayError` (or `trajectories.TrajectoryError`) with a message and a hint;
`format_error` turns it into the one-line message a user sees. Exit codes: 2 bad input, 1 anything else.
"""

from __future__ import annotations

import os

EXIT_BAD_INPUT = 2
EXIT_FAILURE = 1


class WorldplayError(Exception):
    """An expected failure with a user-facing message and an optional hint."""

    exit_code = EXIT_FAILURE

    def __init__(self, message: str, hint: str | None = None):
        super().__init__(message)
        self.message = message
        self.hint = hint


class BadInput(WorldplayError):
    """The user's input is wrong; nothing was started or enqueued."""

    exit_code = EXIT_BAD_INPUT


def debug_enabled() -> bool:
    return os.environ.get("WORLDPLAY_DEBUG", "") not in ("", "0", "false", "no")


def format_error(message: str, hint: str | None = None) -> str:
    text = f"error: {message}"
    if hint:
        text += f" (hint: {hint})"
    return text
