"""The resident runtime: a real worker keeps a 2-rank gloo group with the tiny model loaded across jobs,
swaps weights for another variant, survives a killed rank, and its ranks end with the worker."""

from __future__ import annotations

import json
import os
import signal
import time
from pathlib import Path

import pytest

from spine_util import alive, wait_until
from worldplay_cli.queue import fetch_job
from worker.runtime.client import log_dir

SMALL = ("--width", "64", "--height", "32", "--prompt", "a quiet street", "--gpus", "2")


@pytest.fixture(scope="module")
def tiny_model_dir(tmp_path_factory):
    from worker.pipeline.tiny_model import write_tiny_model

    return write_tiny_model(tmp_path_factory.mktemp("tiny-model"))


@pytest.fixture
def resident_env(worldplay_env, tiny_model_dir, monkeypatch):
    monkeypatch.setenv("WORLDPLAY_EXTRA_ENGINES", "resident=worker.runtime.engine:ResidentEngine")
    monkeypatch.setenv("WORLDPLAY_MODEL_DIR", str(tiny_model_dir))
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    return Path(worldplay_env["WORLDPLAY_OUTPUT_ROOT"])


def _enqueue(cli, *args) -> str:
    code, out, err = cli("generate", "--queue", "resident", "--engine", "resident", *SMALL, *args)
    assert code == 0, err
    return out.strip()


def _ended(conn, job_id) -> str | None:
    status = fetch_job(conn, job_id).get_status().value
    return status if status in ("finished", "failed") else None


def _info(outputs: Path, job_id: str) -> dict:
    return json.loads((outputs / job_id / "manifest.json").read_text())["engine"]


@pytest.mark.slow
def test_resident_group_loads_once_swaps_survives_a_dead_rank_and_ends_with_the_worker(cli, redis_conn, resident_env, start_worker):
    outputs = resident_env
    first = _enqueue(cli, "--variant", "ar-distilled", "--pose", "w-3")
    second = _enqueue(cli, "--variant", "ar-distilled", "--pose", "w-7", "--seed", "2")
    worker = start_worker("resident")
    for job_id in (first, second):
        assert wait_until(lambda job_id=job_id: _ended(redis_conn, job_id), 180, what=f"job {job_id}") == "finished", (
            fetch_job(redis_conn, job_id).meta.get("failure")
        )

    # 1. one load serves both jobs
    infos = [_info(outputs, job_id) for job_id in (first, second)]
    assert [info["resident"]["reused_weights"] for info in infos] == [False, True]
    assert [info["resident"]["loads_in_group"] for info in infos] == [1, 1]
    assert infos[0]["sequence_parallel"] == 2
    assert infos[0]["memory"]["profile"] == "resident" and "generate" in infos[0]["memory"]["peak_bytes"]
    assert "resident: reusing ar-distilled weights" in (outputs / second / "log.txt").read_text()
    for job_id in (first, second):
        assert (outputs / job_id / "video.mp4").stat().st_size > 0

    # 2. another variant swaps the weights; a rank killed mid-job fails the job with the reason, promptly
    doomed = _enqueue(cli, "--variant", "ar", "--steps", "30", "--pose", "w-15")
    wait_until(lambda: (fetch_job(redis_conn, doomed).meta.get("progress") or {}).get("step"), 120, what="denoising to start")
    logs = log_dir(worker.pid)
    pids = [int(pid) for pid in (logs / "group.txt").read_text().split()]
    os.kill(pids[1], signal.SIGKILL)
    killed_at = time.monotonic()
    assert wait_until(lambda: _ended(redis_conn, doomed), 60, what="the failure") == "failed"
    assert time.monotonic() - killed_at < 20
    failure = fetch_job(redis_conn, doomed).meta["failure"]
    assert "rank 1 of 2 was killed by SIGKILL during the job" in failure["message"]
    assert "resident: dropping ar-distilled" in (outputs / doomed / "log.txt").read_text()
    assert not any(alive(pid) for pid in pids)

    # 3. a fresh group serves the next job; the supervisor counted every load
    after = _enqueue(cli, "--variant", "ar-distilled", "--pose", "w-3")
    assert wait_until(lambda: _ended(redis_conn, after), 120, what="the next job") == "finished"
    info = _info(outputs, after)
    assert info["resident"]["group"] == 2 and info["resident"]["loads_in_worker"] == 3
    supervisor_log = (logs / "supervisor.log").read_text()
    assert [line.split(": ")[1] for line in supervisor_log.splitlines() if "of this worker" in line] == [
        "load #1 of this worker", "load #2 of this worker", "load #3 of this worker"]  # fmt: skip

    # 4. the ranks end with their worker
    pids = [int(pid) for pid in (logs / "group.txt").read_text().split()]
    worker.send_signal(signal.SIGTERM)
    worker.wait(timeout=30)
    wait_until(lambda: not any(alive(pid) for pid in pids), 30, what="the ranks to stop with the worker")
