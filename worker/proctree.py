"""Finding and ending every process a job started, wherever it went.

A job's processes cannot be found by parentage alone: torchrun starts each rank with
`start_new_session=True`, and a process whose parent died is re-parented to init. So every process a job
starts inherits a marker in its environment (`WORLDPLAY_RUN=<job id>:<execution id>`, set before the work
horse forks), and ending a job means: SIGTERM every marked process and every process group they lead,
wait up to a grace period, SIGKILL whatever is left, and sweep again for stragglers spawned meanwhile.

Where to look: on Linux the rq worker makes itself a child subreaper (`become_subreaper`), so a process
whose parent died is re-parented to the worker, not to init: every process a job started, daemonized or
in its own session, stays a descendant of the worker, and finding the marked ones means reading the
environment of the worker's few descendants, not of every process on the host (that scan took ~1 ms
after every job). The worker then collects the exit status of those re-parented orphans
(`reap_orphans`). Elsewhere, and in a work horse whose worker is gone, every process is scanned.
"""

from __future__ import annotations

import ctypes
import os
import signal
import sys
import time

import psutil

MARKER_ENV = "WORLDPLAY_RUN"
_SWEEPS = 3
_RESCAN_S = 0.5
_KILL_WAIT_S = 5.0
_WALKS = 4
_PR_SET_CHILD_SUBREAPER = 36
_PR_SET_PDEATHSIG = 1
# The subreaper whose descendants hold every marked process: set in the worker, inherited by its forks.
_subreaper: int | None = None


def become_subreaper() -> bool:
    """Make this process the child subreaper of everything below it (Linux); False where that is not
    possible (then every search scans all processes, as before)."""
    global _subreaper
    pid = os.getpid()
    if not sys.platform.startswith("linux") or not os.path.exists(f"/proc/{pid}/task/{pid}/children"):
        return False
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        if libc.prctl(_PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) != 0:
            return False
    except (OSError, AttributeError):
        return False
    _subreaper = pid
    return True


def signal_on_parent_death(signum: int) -> bool:
    """Have the kernel send `signum` to this process when the thread that forked it ends (Linux,
    `prctl(PR_SET_PDEATHSIG)`); False where that is not possible. Install the handler first: a real-time
    signal's default action ends the process."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        return libc.prctl(_PR_SET_PDEATHSIG, signum, 0, 0, 0) == 0
    except (OSError, AttributeError):
        return False


def _search_root() -> int | None:
    """The subreaper to search below: this process, or the worker of this work horse while it lives (a
    horse whose worker died has its orphans re-parented elsewhere)."""
    if _subreaper is not None and _subreaper in (os.getpid(), os.getppid()):
        return _subreaper
    return None


def _children(pid: int) -> list[int]:
    if pid == _subreaper:
        # The subreaper forks its work horses from its main thread (rq's work loop runs there), and the
        # kernel hands orphans to its first living thread, the main one: that one list holds them all.
        tids = [str(pid)]
    else:
        try:
            tids = os.listdir(f"/proc/{pid}/task")
        except OSError:
            return []
    found = []
    for tid in tids:
        try:
            with open(f"/proc/{pid}/task/{tid}/children", "rb") as handle:
                found.extend(int(child) for child in handle.read().split())
        except OSError:
            continue
    return found


def _descendants(root: int) -> set[int]:
    found: set[int] = set()
    stack = [root]
    while stack:
        for child in _children(stack.pop()):
            if child not in found:
                found.add(child)
                stack.append(child)
    return found


def descendants(root: int) -> set[int]:
    """Every process below `root`. A process that exits mid-walk hands its children to the subreaper,
    possibly after the walk read the subreaper's list: walk again until a walk finds nobody new (a few
    times at most; `terminate` sweeps again anyway)."""
    found = _descendants(root)
    # Only a process already found (if only as a zombie) can hand children over mid-walk.
    for _ in range(_WALKS if found else 0):
        again = _descendants(root)
        if again <= found:
            return again
        found |= again
    return found


def reap_orphans(spare: int = 0) -> int:
    """Collect the exit status of this subreaper's ended children (orphans re-parented to it), never
    `spare` (the work horse, which rq waits for itself). Returns how many were collected."""
    collected = 0
    for pid in _children(os.getpid()):
        if pid == spare:
            continue
        try:
            if os.waitpid(pid, os.WNOHANG)[0]:
                collected += 1
        except ChildProcessError:
            continue
    return collected


def marked_processes(marker: str, exclude: set[int] | frozenset[int] = frozenset()) -> list[psutil.Process]:
    """Live processes whose environment carries `MARKER_ENV=marker` (zombies have no environment)."""
    root = _search_root()
    if root is not None:
        return _marked_from_proc(marker, exclude, descendants(root))
    if os.path.isdir("/proc/self"):
        return _marked_from_proc(marker, exclude, (int(name) for name in os.listdir("/proc") if name.isdigit()))
    found = []
    for process in psutil.process_iter():
        if process.pid in exclude:
            continue
        try:
            if process.environ().get(MARKER_ENV) == marker:
                found.append(process)
        except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
            continue
    return found


def _marked_from_proc(marker: str, exclude: set[int] | frozenset[int], pids) -> list[psutil.Process]:
    # Reading /proc directly is ~10x faster than psutil's parsed environ; this runs after every job.
    needle = f"{MARKER_ENV}={marker}".encode()
    found = []
    for pid in pids:
        if pid in exclude:
            continue
        try:
            with open(f"/proc/{pid}/environ", "rb") as handle:
                entries = handle.read().split(b"\0")
        except OSError:
            continue
        if needle in entries:
            try:
                found.append(psutil.Process(pid))
            except psutil.NoSuchProcess:
                continue
    return found


def _group_members(pgid: int) -> list[psutil.Process]:
    root = _search_root()
    members = []
    for pid in descendants(root) if root is not None else psutil.pids():
        try:
            if os.getpgid(pid) != pgid:
                continue
            process = psutil.Process(pid)
            if process.status() != psutil.STATUS_ZOMBIE:
                members.append(process)
        except (ProcessLookupError, psutil.NoSuchProcess, psutil.ZombieProcess, psutil.AccessDenied):
            continue
    return members


def _signal(processes: list[psutil.Process], sig: int) -> None:
    for process in processes:
        try:
            process.send_signal(sig)
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            continue


def _alive(processes: list[psutil.Process]) -> list[psutil.Process]:
    alive = []
    for process in processes:
        try:
            if process.is_running() and process.status() != psutil.STATUS_ZOMBIE:
                alive.append(process)
        except (psutil.NoSuchProcess, psutil.ZombieProcess):
            continue
    return alive


def terminate(
    marker: str | None,
    pgids: tuple[int, ...] = (),
    grace_s: float = 10.0,
    exclude: set[int] | frozenset[int] = frozenset(),
) -> int:
    """End every process marked with `marker` and every member of `pgids`: SIGTERM, wait up to `grace_s`,
    SIGKILL. Returns how many processes were signalled. Never signals `exclude` or the caller."""
    exclude = set(exclude) | {os.getpid()}
    signalled: set[int] = set()

    def targets() -> list[psutil.Process]:
        found = {p.pid: p for p in marked_processes(marker, exclude)} if marker else {}
        for pgid in pgids:
            for process in _group_members(pgid):
                if process.pid not in exclude:
                    found.setdefault(process.pid, process)
        return list(found.values())

    current = targets()
    if not current:
        return 0
    if grace_s > 0:
        _signal(current, signal.SIGTERM)
        signalled.update(p.pid for p in current)
        deadline = time.monotonic() + grace_s
        next_scan = time.monotonic() + _RESCAN_S
        while time.monotonic() < deadline:
            current = _alive(current)
            if time.monotonic() >= next_scan or not current:
                # Processes spawned during the grace get their SIGTERM too.
                newcomers = [p for p in targets() if p.pid not in signalled]
                _signal(newcomers, signal.SIGTERM)
                signalled.update(p.pid for p in newcomers)
                current += newcomers
                next_scan = time.monotonic() + _RESCAN_S
                if not current:
                    break
            time.sleep(0.05)
    for _ in range(_SWEEPS):
        current = targets()
        if not current:
            break
        signalled.update(p.pid for p in current)
        _signal(current, signal.SIGKILL)
        deadline = time.monotonic() + _KILL_WAIT_S
        while _alive(current) and time.monotonic() < deadline:
            time.sleep(0.02)
    return len(signalled)
