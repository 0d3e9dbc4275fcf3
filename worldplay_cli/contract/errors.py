"""The one error type the CLI formats, and the one formatter.

Library code raises `WorldplayError` (or `trajectories.TrajectoryError`) with a message and a hint;
`format_error` turns it into the one-line message a user sees. Exit codes: 2 bad input, 1 anything else.
Every such error has the shape of `HintedError` (`message`, `hint`), the worker's included; `first_error`
is the one line a pydantic validation error becomes.
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING

from trajectories.errors import HintedError

if TYPE_CHECKING:
    from pydantic import ValidationError

__all__ = ["EXIT_BAD_INPUT", "EXIT_FAILURE", "BadInput", "HintedError", "WorldplayError", "first_error", "format_error"]

EXIT_BAD_INPUT = 2
EXIT_FAILURE = 1


class WorldplayError(HintedError):
    """An expected failure with a user-facing message and an optional hint."""

    exit_code = EXIT_FAILURE


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


def first_error(error: ValidationError, default_location: str = "") -> str:
    """The first error of a pydantic validation as one line: `location: message` (just the message when
    it has no location), without pydantic's `Value error, ` prefix or validator names in the location."""
    first = error.errors()[0]
    location = ".".join(str(part) for part in first["loc"] if not str(part).startswith("function-")) or default_location
    message = first["msg"].removeprefix("Value error, ")
    return f"{location}: {message}" if location else message
