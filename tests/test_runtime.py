"""The resident runtime behind the `native` engine: a real worker keeps a 2-rank gloo group with the tiny
model loaded across jobs, swaps weights for another variant, survives a killed rank, renders what one
process renders, and its ranks end with the worker."""

from __future__ import annotations

import json
import os
import signal
import time
from pathlib import Path

import numpy as np
import pytest

from spine_util import alive, linked_copy, wait_until
from worker.pipeline.model_dir import WEIGHTS_NAME
from worker.runtime.client import log_dir
from worker.video import read_video_frames
from worldplay_cli.contract.queue import fetch_job

SMALL = ("--width", "64", "--height", "32", "--prompt", "a quiet street")


@pytest.fixture
def resident_env(worldplay_env, tiny_model_dir, monkeypatch, tmp_path):
    monkeypatch.setenv("WORLDPLAY_MODEL_DIR", str(tiny_model_dir))
    monkeypatch.setenv("WORLDPLAY_WORKER__MODEL_DIRS", str(tmp_path / "broken"))  # a job may name it (step 4)
    return Path(worldplay_env["WORLDPLAY_OUTPUT_ROOT"])


def _enqueue(cli, *args, gpus: int = 2) -> str:
    code, out, err = cli(
        "generate", "--queue-name", "resident", "--engine", "native", "--gpus", str(gpus), *SMALL, *args
    )
    assert code == 0, err
    return out.strip()


def _ended(conn, job_id) -> str | None:
    status = fetch_job(conn, job_id).get_status().value
    return status if status in ("finished", "failed") else None


def _info(outputs: Path, job_id: str) -> dict:
    return json.loads((outputs / job_id / "manifest.json").read_text())["engine"]


@pytest.mark.slow
def test_resident_group_loads_once_swaps_survives_a_dead_rank_and_ends_with_the_worker(
    cli, redis_conn, resident_env, start_worker, tiny_model_dir, tmp_path
):
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
    wait_until(
        lambda: (fetch_job(redis_conn, doomed).meta.get("progress") or {}).get("step"), 120, what="denoising to start"
    )
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

    # 4. a job the ranks refuse (a truncated checkpoint) fails alone with the reason; the group stays up
    broken = linked_copy(tiny_model_dir, tmp_path / "broken", replace_dirs=("ar_model",))
    (broken / "ar_model").mkdir()
    intact = (tiny_model_dir / "ar_model" / WEIGHTS_NAME).read_bytes()
    (broken / "ar_model" / WEIGHTS_NAME).write_bytes(intact[: len(intact) // 2])
    refused = _enqueue(cli, "--variant", "ar", "--pose", "w-3", "--model-dir", str(broken))
    assert wait_until(lambda: _ended(redis_conn, refused), 60, what="the refusal") == "failed"
    failure = fetch_job(redis_conn, refused).meta["failure"]
    assert failure["kind"] == "refused" and "cannot load the transformer" in failure["message"]
    assert all(alive(pid) for pid in (int(pid) for pid in (logs / "group.txt").read_text().split()))

    # 5. one rank renders what two ranks render (the group is restarted with one rank)
    single = _enqueue(cli, "--variant", "ar-distilled", "--pose", "w-3", gpus=1)
    assert wait_until(lambda: _ended(redis_conn, single), 120, what="the one-rank job") == "finished"
    assert (_info(outputs, single)["sequence_parallel"], _info(outputs, after)["sequence_parallel"]) == (1, 2)
    assert _info(outputs, single)["resident"]["group"] == 3  # the refusal did not restart group 2
    frames = [read_video_frames(outputs / job_id / "video.mp4") for job_id in (single, after)]
    # exact: sequence parallel only moves tokens and heads between the ranks (tests/test_parallel.py)
    assert len(frames[0]) == len(frames[1]) == 13
    assert all(np.array_equal(a, b) for a, b in zip(*frames))

    # 6. the ranks end with their worker
    pids = [int(pid) for pid in (logs / "group.txt").read_text().split()]
    worker.send_signal(signal.SIGTERM)
    worker.wait(timeout=30)
    wait_until(lambda: not any(alive(pid) for pid in pids), 30, what="the ranks to stop with the worker")


@pytest.mark.slow
def test_canceling_a_resident_job_stops_the_ranks_at_a_step_and_keeps_the_weights_loaded(
    cli, redis_conn, resident_env, start_worker
):
    outputs = resident_env
    worker = start_worker("resident")
    long_job = _enqueue(cli, "--variant", "ar-distilled", "--steps", "40", "--pose", "w-15")
    wait_until(
        lambda: (fetch_job(redis_conn, long_job).meta.get("progress") or {}).get("step"), 180, what="denoising to start"
    )
    logs = log_dir(worker.pid)
    pids = [int(pid) for pid in (logs / "group.txt").read_text().split()]

    code, out, err = cli("jobs", "cancel", long_job, "--json")
    assert code == 0, err
    assert json.loads(out)[0]["status"] in ("stopped", "canceled")
    assert fetch_job(redis_conn, long_job).meta["failure"]["kind"] == "canceled"
    assert not (outputs / long_job / "video.mp4").exists()

    # the same ranks, with the weights still loaded, serve the next job
    after = _enqueue(cli, "--variant", "ar-distilled", "--pose", "w-3")
    assert wait_until(lambda: _ended(redis_conn, after), 120, what="the next job") == "finished"
    info = _info(outputs, after)
    assert info["resident"]["reused_weights"] is True and info["resident"]["group"] == 1, (
        info["resident"],
        worker.log_path.read_text()[-4000:],
        [path.read_text()[-2000:] for path in sorted(logs.glob("*.log"))],
    )
    assert [int(pid) for pid in (logs / "group.txt").read_text().split()] == pids
    assert all(alive(pid) for pid in pids)
