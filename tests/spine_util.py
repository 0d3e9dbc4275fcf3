"""Small helpers for queue/worker tests: polling with a deadline, process liveness."""

from __future__ import annotations

import time
from pathlib import Path

import psutil

# A preview job that renders in a moment: `worldplay generate --queue *SMALL_JOB`.
SMALL_JOB = ("--pose", "w-3", "--width", "64", "--height", "32", "--prompt", "a quiet street")


def wait_until(predicate, timeout: float, interval: float = 0.05, what: str = "condition"):
    """Poll `predicate` until it returns something truthy; fail the test after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(interval)


def alive(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def linked_copy(source: Path, target: Path, replace_dirs: tuple[str, ...] = ()) -> Path:
    """A directory whose top-level entries link to `source`'s, except `replace_dirs` (left to the test)."""
    target.mkdir()
    for entry in source.iterdir():
        if entry.name not in replace_dirs:
            (target / entry.name).symlink_to(entry)
    return target
