"""Helpers for Textual Pilot tests."""

from __future__ import annotations

import time


async def settle(pilot, condition, timeout_s: float = 15.0, what: str = "the app"):
    """Let the app run, then until `condition()` holds (refreshes, timers and workers run on their own time)."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        await pilot.pause(0.05)
        if condition():
            return
    raise AssertionError(f"timed out waiting for {what}")
