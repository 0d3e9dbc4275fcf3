"""Issue #17: `worldplay worker` restarts a worker process that dies, and says so.

A real supervisor (`python -m worldplay_cli worker`) with a real worker process, which is SIGKILLed: a new
worker appears (registered in Redis and serving the queue), the restart is logged, and SIGTERM still stops
the whole thing.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys

import pytest
from rq.worker import Worker

from spine_util import alive, wait_until
from worldplay_cli.contract.queue import fetch_job, rq_queue
from worldplay_cli.contract.specs import TASK_NOOP


def _worker_pids(log_path) -> list[int]:
    return [int(pid) for pid in re.findall(r"worker pid (\d+) on queue", log_path.read_text())]


def _registered(conn) -> set[str]:
    return {worker.name for worker in Worker.all(connection=conn)}


@pytest.mark.slow
def test_the_supervisor_restarts_a_killed_worker(worldplay_env, redis_conn, tmp_path):
    log_path = tmp_path / "supervisor.log"
    with open(log_path, "w") as log:
        supervisor = subprocess.Popen(
            [sys.executable, "-m", "worldplay_cli", "worker", "--queue", "generate"],
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        [first] = wait_until(lambda: _worker_pids(log_path), 30, what="the first worker")
        wait_until(
            lambda: any(name.endswith(f".{first}") for name in _registered(redis_conn)), 30, what="it to register"
        )
        os.kill(first, signal.SIGKILL)
        pids = wait_until(lambda: _worker_pids(log_path)[1:] and _worker_pids(log_path), 30, what="a new worker")
        second = pids[1]
        assert second != first and alive(second)
        assert f"worker pid {first} (default devices) was killed by signal 9; restarting it" in log_path.read_text()
        job = rq_queue(redis_conn, "generate").enqueue(TASK_NOOP)
        wait_until(
            lambda: fetch_job(redis_conn, job.id).get_status().value == "finished", 30, what="the new worker to serve"
        )
        supervisor.send_signal(signal.SIGTERM)
        assert supervisor.wait(timeout=30) == 0
        assert not alive(second)
    finally:
        if supervisor.poll() is None:
            supervisor.kill()
            supervisor.wait()
