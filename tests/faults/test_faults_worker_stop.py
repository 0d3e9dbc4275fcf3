"""A worker stopped while it is still starting up stops cleanly: exit 0, no traceback, no hang.

`worldplay worker` (and any supervisor) may send SIGTERM the moment a worker shows up in rq's registry,
while rq's bootstrap is still running (starting the command listener's thread, logging, heartbeating).
An exception raised from the signal handler there ended the worker with a traceback (exit 1) in about
one stop in two, and once hung it in a half-started thread.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import pytest


@pytest.mark.slow
def test_sigterm_right_after_registration_stops_the_worker_cleanly(worldplay_env, redis_conn, tmp_path):
    for cycle in range(10):
        log_path = tmp_path / f"worker-{cycle}.log"
        with open(log_path, "w") as log:
            worker = subprocess.Popen(
                [sys.executable, "-m", "worker", "run", "--queue", "starting"], env=os.environ, stdout=log, stderr=log
            )
        try:
            deadline = time.monotonic() + 60
            # Poll tightly: the point is to hit the worker in the middle of its start-up.
            while not redis_conn.smembers("rq:workers"):
                assert worker.poll() is None, log_path.read_text()
                assert time.monotonic() < deadline, "the worker never registered"
                time.sleep(0.002)
            worker.send_signal(signal.SIGTERM)
            try:
                code = worker.wait(timeout=15)
            except subprocess.TimeoutExpired:
                pytest.fail(f"cycle {cycle}: the worker hung after SIGTERM:\n{log_path.read_text()[-2000:]}")
            output = log_path.read_text()
            assert code == 0 and "Traceback" not in output, f"cycle {cycle}: exit {code}\n{output[-2000:]}"
            assert not redis_conn.smembers("rq:workers")  # it said goodbye (register_death)
        finally:
            if worker.poll() is None:
                worker.kill()
                worker.wait()
