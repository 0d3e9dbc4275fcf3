"""A job's processes are found below the worker (a child subreaper on Linux), not by scanning the host.

Real redis-server, real `python -m worker` processes, the `daemons` engine of tests/spine_engines.py: it
leaves a double-forked daemon with the job's marker and one without it (like the resident supervisor).
"""

from __future__ import annotations

import sys
from pathlib import Path

import psutil
import pytest

from spine_util import SMALL_JOB as SMALL
from spine_util import alive, wait_until
from worldplay_cli.contract.queue import fetch_job

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="child subreapers are Linux's")


def _record(path: Path) -> tuple[int, int]:
    pid, ppid = path.read_text().split()
    return int(pid), int(ppid)


def _zombie_children(pid: int) -> list[int]:
    return [child.pid for child in psutil.Process(pid).children() if child.status() == psutil.STATUS_ZOMBIE]


def test_a_finished_job_leaves_no_daemon_and_the_unmarked_one_survives_and_is_reaped(
    cli, redis_conn, engines_env, start_worker
):
    code, out, err = cli("generate", "--queue", *SMALL, "--engine", "daemons")
    assert code == 0, err
    job_id = out.strip()
    worker = start_worker("generate")
    wait_until(lambda: fetch_job(redis_conn, job_id).get_status().value == "finished", 60, what="the job")
    job_dir = engines_env / job_id
    try:
        _check_daemons(job_dir, worker)
    finally:
        (job_dir / "release").touch()


def _check_daemons(job_dir: Path, worker) -> None:
    marked, marked_parent = _record(job_dir / "marked")
    unmarked, unmarked_parent = _record(job_dir / "unmarked")
    # Orphaned when their parents exited, both were adopted by the worker, not by init.
    assert marked_parent == worker.pid and unmarked_parent == worker.pid
    # The marked daemon ignores SIGTERM: it dies at the SIGKILL after the kill grace, and is reaped.
    wait_until(lambda: not psutil.pid_exists(marked), 30, what="the marked daemon to be ended and reaped")
    assert alive(unmarked)
    assert unmarked not in _zombie_children(worker.pid)
    (job_dir / "release").touch()
    # Once it exits, the worker collects it (at its next heartbeat): no zombie is left behind.
    wait_until(lambda: not psutil.pid_exists(unmarked), 30, what="the unmarked daemon to exit and be reaped")
    assert _zombie_children(worker.pid) == []
    assert worker.poll() is None
