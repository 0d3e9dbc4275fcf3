"""What must hold when things go wrong: refused tasks, cancel, timeouts, dead workers, shutdown.

Real redis-server, real `python -m worker` processes, engines that misbehave on purpose
(tests/spine_engines.py), liveness timings shortened by `worldplay_env` (heartbeat 1 s, lost after 3 s,
reaper every 1 s, kill grace 2 s, shutdown grace 2 s).
"""

from __future__ import annotations

import json
import os
import signal
import time
from pathlib import Path

import pytest
from rq import Queue

from spine_util import SMALL_JOB as SMALL
from spine_util import alive, wait_until
from worldplay_cli.contract.queue import fetch_job, rq_queue
from worldplay_cli.contract.specs import TASK_NOOP

TESTS_DIR = str(Path(__file__).parent)


def _enqueue(cli, *args) -> str:
    code, out, err = cli("generate", "--queue", *SMALL, *args)
    assert code == 0, err
    return out.strip()


def _status(conn, job_id) -> str:
    return fetch_job(conn, job_id).get_status().value


def _pids(path: Path, count: int) -> list[int] | None:
    try:
        pids = [int(line) for line in path.read_text().split()]
    except FileNotFoundError:
        return None
    return pids if len(pids) >= count else None


def test_jobs_naming_other_functions_or_pickled_are_refused(redis_conn, start_worker, tmp_path):
    target = tmp_path / "pwned"
    queue = rq_queue(redis_conn, "generate")
    shell = queue.enqueue("os.system", f"touch {target}")
    builtin = queue.enqueue("exec", f"open({str(target)!r}, 'w')")
    pickled = Queue("generate", connection=redis_conn).enqueue(TASK_NOOP)
    allowed = queue.enqueue(TASK_NOOP)
    worker = start_worker("generate", "--burst")
    assert worker.wait(timeout=60) == 0
    for job in (shell, builtin, pickled):
        refused = fetch_job(redis_conn, job.id)
        assert refused.get_status().value == "failed"
        assert refused.meta["failure"]["kind"] == "refused"
        assert refused.retries_left in (None, 0)
    assert "not on the worldplay allowlist" in fetch_job(redis_conn, shell.id).meta["failure"]["message"]
    assert "'exec'" in fetch_job(redis_conn, builtin.id).meta["failure"]["message"]
    assert "not JSON" in fetch_job(redis_conn, pickled.id).meta["failure"]["message"]
    assert _status(redis_conn, allowed.id) == "finished"
    assert not target.exists()


@pytest.mark.slow
def test_cancel_ends_the_whole_process_tree(cli, redis_conn, engines_env, start_worker):
    job_id = _enqueue(cli, "--engine", "tree")
    start_worker("generate")
    pids = wait_until(lambda: _pids(engines_env / job_id / "pids.txt", 2), 30, what="the engine's children")
    started = time.monotonic()
    code, out, err = cli("jobs", "cancel", job_id, "--json")
    elapsed = time.monotonic() - started
    assert code == 0, err
    assert json.loads(out)[0]["status"] == "stopped"
    # SIGTERM is ignored by both children, so they die at the SIGKILL after the 2 s grace.
    assert elapsed < 2 + 10
    assert not any(alive(pid) for pid in pids)
    job = fetch_job(redis_conn, job_id)
    assert job.meta["failure"]["kind"] == "canceled"
    manifest = json.loads((engines_env / job_id / "manifest.json").read_text())
    assert manifest["status"] == "stopped" and manifest["failure"]["kind"] == "canceled"
    assert not (engines_env / job_id / "video.mp4").exists()
    # The worker is still healthy.
    follow_up = rq_queue(redis_conn, "generate").enqueue(TASK_NOOP)
    wait_until(lambda: _status(redis_conn, follow_up.id) == "finished", 30, what="the next job")
    # rq files the stopped job with the failed ones; the listing counts it as stopped, and finds it so.
    code, out, err = cli("jobs", "list", "--json")
    counts = json.loads(out)["counts"]
    assert code == 0 and (counts["stopped"], counts["failed"], counts["finished"]) == (1, 0, 1), err
    code, out, _ = cli("jobs", "list", "--status", "stopped", "--json")
    assert [row["id"] for row in json.loads(out)["jobs"]] == [job_id]
    code, out, _ = cli("jobs", "list", "--status", "failed", "--json")
    assert json.loads(out)["jobs"] == []


@pytest.mark.slow
def test_a_timeout_ends_the_whole_process_tree(cli, redis_conn, engines_env, start_worker):
    job_id = _enqueue(cli, "--engine", "tree", "--timeout", "3")
    start_worker("generate")
    pids = wait_until(lambda: _pids(engines_env / job_id / "pids.txt", 2), 30, what="the engine's children")
    wait_until(lambda: _status(redis_conn, job_id) == "failed", 30, what="the timeout")
    assert not any(alive(pid) for pid in pids)
    failure = fetch_job(redis_conn, job_id).meta["failure"]
    assert failure["kind"] == "timeout" and "3 s" in failure["message"]


@pytest.mark.slow
def test_a_killed_worker_without_retries_left_fails_the_job_with_the_reason(
    cli, redis_conn, engines_env, start_worker, monkeypatch
):
    monkeypatch.setenv("WORLDPLAY_QUEUE__RETRIES_ON_LOST_WORKER", "0")
    job_id = _enqueue(cli, "--engine", "slow", "--steps", "600")
    doomed = start_worker("generate")
    wait_until(lambda: (engines_env / job_id / "horse.pid").exists(), 30, what="the job to start")
    os.kill(doomed.pid, signal.SIGKILL)
    killed_at = time.monotonic()

    def failed_on_read():
        code, out, _ = cli("jobs", "list", "--json")  # readers reap too; no worker is left
        return code == 0 and json.loads(out)["jobs"][0]["status"] == "failed"

    wait_until(failed_on_read, 60, interval=0.5, what="the lost job to fail")
    assert time.monotonic() - killed_at < 60
    failure = fetch_job(redis_conn, job_id).meta["failure"]
    assert failure["kind"] == "worker_lost" and "no heartbeat" in failure["message"]
    manifest = json.loads((engines_env / job_id / "manifest.json").read_text())
    assert manifest["status"] == "failed" and manifest["failure"]["kind"] == "worker_lost"


@pytest.mark.slow
def test_sigterm_lets_the_job_run_for_the_grace_then_requeues_it_at_the_front(
    cli, redis_conn, engines_env, start_worker
):
    job_id = _enqueue(cli, "--engine", "slow", "--steps", "600")
    behind = _enqueue(cli, "--engine", "slow", "--steps", "1")
    worker = start_worker("generate")
    wait_until(lambda: (engines_env / job_id / "horse.pid").exists(), 30, what="the job to start")
    worker.send_signal(signal.SIGTERM)
    assert worker.wait(timeout=2 + 2 + 20) == 0
    job = fetch_job(redis_conn, job_id)
    assert job.get_status().value == "queued"
    assert rq_queue(redis_conn, "generate").job_ids == [job_id, behind]
    assert job.retries_left == 1  # not used up: shutdown is not the job's fault
    log = (engines_env / job_id / "log.txt").read_text()
    assert "worker shutting down" in log and "re-queued" in log
