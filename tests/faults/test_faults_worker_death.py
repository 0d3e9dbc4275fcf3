"""Issue #17: a job outlives the death of the processes running it.

Real `python -m worker` processes, killed for real (SIGKILL of the worker or of its work horse), with
liveness timings shortened by `worldplay_env` (heartbeat 1 s, lost after 3 s, reaper every 1 s, kill grace
2 s). A job whose worker died is re-queued and finished by another worker, or failed with the true reason
once its retries are used up; its attempts and history survive every kind of failure.
"""

from __future__ import annotations

import json
import os
import signal
import time
from pathlib import Path

import pytest

from spine_util import SMALL_JOB as SMALL
from spine_util import wait_until
from worldplay_cli.contract.queue import fetch_job

# Long enough for the preview engine to spend a few seconds rendering (and encoding) on a busy CPU.
LONG_PREVIEW = ("--pose", "w-63", "--width", "448", "--height", "256", "--prompt", "a long walk")
ENDED = ("finished", "failed", "stopped")


def _enqueue(cli, *args: str) -> str:
    code, out, err = cli("generate", "--queue", *args)
    assert code == 0, err
    return out.strip()


def _rendering(conn, job_ids: list[str], skip: set[str]):
    """(job id, worker name) of a job that is mid-render (its encoder is running), not in `skip`."""
    for job_id in job_ids:
        if job_id in skip:
            continue
        job = fetch_job(conn, job_id)
        progress = job.meta.get("progress") or {}
        if (
            job.get_status().value == "started"
            and progress.get("stage") == "render"
            and (progress.get("step") or 0) >= 2
        ):
            return job_id, job.worker_name
    return None


@pytest.mark.slow
def test_jobs_whose_worker_is_killed_mid_render_are_requeued_and_finished_elsewhere(
    cli, redis_conn, worldplay_env, start_worker, monkeypatch
):
    output_root = Path(worldplay_env["WORLDPLAY_OUTPUT_ROOT"])
    retried = [_enqueue(cli, *LONG_PREVIEW) for _ in range(5)]
    monkeypatch.setenv("WORLDPLAY_QUEUE__RETRIES_ON_LOST_WORKER", "0")
    budgetless = _enqueue(cli, *LONG_PREVIEW)
    jobs = [*retried, budgetless]

    workers = {}

    def start(index: int):
        workers[f"w{index}"] = start_worker("generate", "--name", f"w{index}")

    start(0)
    killed_at: dict[str, float] = {}
    killed_worker: dict[str, str] = {}
    ended_at: dict[str, float] = {}
    deadline = time.monotonic() + 60 * len(jobs)
    while len(ended_at) < len(jobs):
        assert time.monotonic() < deadline, f"jobs still not ended: {set(jobs) - set(ended_at)}"
        target = _rendering(redis_conn, jobs, skip=set(killed_at))
        if target:
            job_id, worker_name = target
            # SIGKILL the worker (not its horse): the horse must notice, end its tree, and record nothing.
            os.kill(workers[worker_name].pid, signal.SIGKILL)
            killed_at[job_id] = time.monotonic()
            killed_worker[job_id] = worker_name
            start(len(workers))
        for job_id in jobs:
            if job_id not in ended_at and fetch_job(redis_conn, job_id).get_status().value in ENDED:
                ended_at[job_id] = time.monotonic()
        time.sleep(0.05)

    assert set(killed_at) == set(jobs), [
        (fetch_job(redis_conn, j).get_status().value, fetch_job(redis_conn, j).meta) for j in jobs
    ][:2]
    for job_id in jobs:
        assert ended_at[job_id] - killed_at[job_id] <= 60
        job = fetch_job(redis_conn, job_id)
        history = job.meta.get("history") or []
        assert history and history[0]["attempt"] == 1 and history[0]["outcome"] == "worker_lost", history
        directory = output_root / job_id
        assert not list(directory.glob(".attempt-*"))
        if job_id == budgetless:
            assert job.get_status().value == "failed"
            assert job.meta["failure"]["kind"] == "worker_lost" and "no retries left" in job.meta["failure"]["message"]
            assert json.loads((directory / "manifest.json").read_text())["status"] == "failed"
            assert not (directory / "video.mp4").exists()
        else:
            assert job.get_status().value == "finished", job.meta.get("failure")
            assert job.meta["attempt"] == 2 and len(history) == 1
            assert job.worker_name != killed_worker[job_id] and (directory / "video.mp4").exists()
            log = (directory / "log.txt").read_text()
            assert "re-queued" in log and "attempt 2 started" in log


@pytest.mark.slow
def test_attempts_and_history_survive_a_killed_work_horse(cli, redis_conn, engines_env, start_worker):  # noqa: F811
    job_id = _enqueue(cli, *SMALL, "--engine", "slow", "--steps", "40")
    start_worker("generate")
    horse_pid = wait_until(lambda: _read_pid(engines_env / job_id / "horse.pid"), 30, what="the job to start")
    os.kill(horse_pid, signal.SIGKILL)
    wait_until(lambda: fetch_job(redis_conn, job_id).get_status().value in ENDED, 60, what="the retry to end")
    job = fetch_job(redis_conn, job_id)
    assert job.get_status().value == "finished", job.meta.get("failure")
    assert job.meta["attempt"] == 2
    [first] = job.meta["history"]
    assert first["attempt"] == 1 and first["outcome"] == "engine_error" and "SIGKILL" in first["message"]
    assert job.retries_left == 0


@pytest.mark.slow
def test_a_canceled_job_leaves_no_attempt_directory(cli, redis_conn, engines_env, start_worker):  # noqa: F811
    job_id = _enqueue(cli, *SMALL, "--engine", "tree")
    start_worker("generate")
    directory = engines_env / job_id
    wait_until(
        lambda: (directory / "pids.txt").exists() and list(directory.glob(".attempt-*")), 30, what="the job to start"
    )
    code, out, err = cli("jobs", "cancel", job_id, "--json")
    assert code == 0, err
    assert json.loads(out)[0]["status"] == "stopped"
    assert not list(directory.glob(".attempt-*"))


def _read_pid(path: Path) -> int | None:
    try:
        return int(path.read_text())
    except (FileNotFoundError, ValueError):
        return None


@pytest.mark.slow
def test_a_frozen_run_that_wakes_up_after_its_job_was_rerun_leaves_the_job_alone(
    cli, redis_conn, engines_env, start_worker
):  # noqa: F811
    job_id = _enqueue(cli, *SMALL, "--engine", "slow", "--steps", "40")
    frozen = start_worker("generate")
    horse_pid = wait_until(lambda: _read_pid(engines_env / job_id / "horse.pid"), 30, what="the job to start")
    # A frozen host (or a network partition): no heartbeats, so the job is taken for lost and re-run.
    for pid in (frozen.pid, horse_pid):
        os.kill(pid, signal.SIGSTOP)
    try:
        start_worker("generate")
        wait_until(lambda: fetch_job(redis_conn, job_id).get_status().value == "finished", 60, what="the re-run")
    finally:
        for pid in (horse_pid, frozen.pid):
            os.kill(pid, signal.SIGCONT)
    # The old run carries on, finds its claim taken at the latest when it commits, and ends recording nothing.
    wait_until(
        lambda: "ends without a result" in (engines_env / job_id / "log.txt").read_text(), 60, what="the old run to end"
    )
    job = fetch_job(redis_conn, job_id)
    assert job.get_status().value == "finished" and "failure" not in job.meta
    assert job.meta["attempt"] == 2 and [entry["outcome"] for entry in job.meta["history"]] == ["worker_lost"]
    assert (engines_env / job_id / "video.mp4").exists()
    assert not list((engines_env / job_id).glob(".attempt-*"))
