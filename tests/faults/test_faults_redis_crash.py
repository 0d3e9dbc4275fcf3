"""Issue #17: a Redis crash loses no acknowledged job and stops no worker.

Each test runs its own embedded redis-server (the session one is shared) and kills it for real (SIGKILL
of the redis-server process), then restarts it from its append-only file the way the CLI does. Real
`python -m worker` processes keep running jobs across the crash.
"""

from __future__ import annotations

import os
import signal
import threading

import psutil
import pytest
import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from spine_util import SMALL_JOB as SMALL
from spine_util import wait_until
from worldplay_cli import redis_server as server
from worldplay_cli.contract.queue import fetch_job, rq_queue
from worldplay_cli.contract.settings import ServerSettings, Settings
from worldplay_cli.contract.specs import TASK_NOOP

ROUNDS = 3
BACKLOG = 200


@pytest.fixture
def own_redis(tmp_path, engines_env, monkeypatch):  # noqa: F811
    """An embedded server of this test's own, which the test's CLI calls and workers use."""
    settings = Settings(server=ServerSettings(data_dir=tmp_path / "redis"))
    server.start(settings)
    paths = server.ServerPaths.of(settings.server.data_dir)
    url = server.embedded_url(paths, paths.password.read_text().strip())
    monkeypatch.setenv("WORLDPLAY_REDIS_URL", url)
    yield settings, url
    server.stop(settings)


def _kill(settings: Settings) -> None:
    pid = int(server.ServerPaths.of(settings.server.data_dir).pidfile.read_text())
    os.kill(pid, signal.SIGKILL)
    # Gone from the process table, not only dead: `server.start` takes a zombie's pid for a live owner.
    wait_until(lambda: not psutil.pid_exists(pid), 10, what="redis-server to be reaped")


def _client(url: str) -> redis.Redis:
    # No retries: a write that fails is not acknowledged, and must not be counted as such.
    return redis.Redis.from_url(url, retry=Retry(NoBackoff(), 0), socket_timeout=5)


def _enqueue_until_refused(url: str, acknowledged: list[str], started: threading.Event) -> None:
    backlog = rq_queue(_client(url), "backlog")
    try:
        for _ in range(100 * BACKLOG):
            acknowledged.append(backlog.enqueue(TASK_NOOP).id)
            if len(acknowledged) >= BACKLOG:
                started.set()
    except (redis.ConnectionError, redis.TimeoutError):
        return
    finally:
        started.set()


@pytest.mark.slow
def test_no_acknowledged_job_is_lost_and_busy_workers_carry_on_across_redis_crashes(cli, own_redis, start_worker):
    settings, url = own_redis
    conn = _client(url)
    assert conn.config_get("appendfsync")["appendfsync"] == "always"  # the guarantee rests on it
    workers = [start_worker("generate"), start_worker("generate")]
    for round_number in range(ROUNDS):
        running = []
        for _ in range(2):
            code, out, err = cli("generate", "--queue", *SMALL, "--engine", "slow", "--steps", "30")
            assert code == 0, err
            running.append(out.strip())

        def both_running():
            return all(
                ((fetch_job(conn, job_id).meta.get("progress") or {}).get("step") or 0) >= 3 for job_id in running
            )

        wait_until(both_running, 30, what="both jobs to run")
        acknowledged: list[str] = []
        backlog_full = threading.Event()
        enqueuer = threading.Thread(target=_enqueue_until_refused, args=(url, acknowledged, backlog_full))
        enqueuer.start()
        assert backlog_full.wait(30)
        # Crash while jobs are being enqueued and two are running.
        _kill(settings)
        enqueuer.join(30)
        server.start(settings)
        conn = _client(url)

        queued = [job_id.decode() for job_id in conn.lrange("rq:queue:backlog", 0, -1)]
        assert len(queued) == len(set(queued))
        lost = [job_id for job_id in acknowledged if job_id not in set(queued)]
        assert not lost, f"round {round_number}: {len(lost)} of {len(acknowledged)} acknowledged jobs lost"
        assert all(fetch_job(conn, job_id).get_status().value == "queued" for job_id in acknowledged)
        conn.delete("rq:queue:backlog")

        def ended():
            return all(fetch_job(conn, job_id).get_status().value in ("finished", "failed") for job_id in running)

        wait_until(ended, 60, interval=0.2, what="the running jobs to end")
        for job_id in running:
            job = fetch_job(conn, job_id)
            assert job.get_status().value == "finished", job.meta.get("failure")
        assert all(worker.poll() is None for worker in workers), "a busy worker quit when Redis went away"
    follow_up = rq_queue(conn, "generate").enqueue(TASK_NOOP)
    wait_until(
        lambda: fetch_job(conn, follow_up.id).get_status().value == "finished", 30, what="a job after the crashes"
    )


def test_a_worker_whose_redis_is_gone_says_so_and_starts_none(own_redis, start_worker):
    settings, _ = own_redis
    server.stop(settings)
    worker = start_worker("generate")
    assert worker.wait(timeout=30) == 1
    assert "cannot reach Redis" in worker.log_path.read_text()
    assert not server.status(settings)["running"]


@pytest.mark.slow
def test_a_job_taken_off_its_queue_but_never_started_is_requeued_without_using_a_retry(cli, redis_conn, start_worker):
    code, out, err = cli("generate", "--queue", *SMALL)
    assert code == 0, err
    job_id = out.strip()
    queue = rq_queue(redis_conn, "generate")
    # What a worker leaves when it dies (or its Redis restarts and the reply is lost) right after BLMOVE.
    assert redis_conn.lmove(queue.key, queue.intermediate_queue_key).decode() == job_id
    start_worker("generate")
    wait_until(lambda: fetch_job(redis_conn, job_id).get_status().value == "finished", 30, what="the job to be run")
    job = fetch_job(redis_conn, job_id)
    assert job.retries_left == 1 and job.meta["attempt"] == 1
    assert redis_conn.llen(queue.intermediate_queue_key) == 0
