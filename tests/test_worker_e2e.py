"""The whole path with real parts: CLI -> Redis -> worker process -> preview engine -> mp4 on disk."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from spine_engines import ENGINES
from spine_util import alive, wait_until
from worker.video import read_video_frames as decode
from worldplay_cli.contract.queue import fetch_job
from worldplay_cli.contract.specs import Manifest

SMALL = ("--pose", "w-3", "--width", "64", "--height", "32")
TESTS_DIR = str(Path(__file__).parent)


@pytest.fixture
def output_root(worldplay_env) -> Path:
    return Path(worldplay_env["WORLDPLAY_OUTPUT_ROOT"])


@pytest.mark.slow
def test_a_queued_preview_job_is_rendered_by_a_worker(cli, redis_conn, output_root, start_worker, monkeypatch):
    monkeypatch.setenv("WORLDPLAY_REWRITE__I2V__API_KEY", "sk-never-in-a-manifest")
    code, out, err = cli("generate", "--queue", "--prompt", "a lighthouse", "--name", "first try", *SMALL)
    assert code == 0, err
    job_id = out.strip()
    start_worker("generate", "--burst")
    wait_until(lambda: fetch_job(redis_conn, job_id).get_status().value in ("finished", "failed"), 60, what="the job")
    job = fetch_job(redis_conn, job_id)
    assert job.get_status().value == "finished", job.meta

    directory = output_root / job_id
    assert {"video.mp4", "trajectory.json", "manifest.json", "log.txt"} <= {p.name for p in directory.iterdir()}
    frames = decode(directory / "video.mp4")
    assert frames.shape == (13, 32, 64, 3)  # 4 latents -> 13 frames at the requested size
    assert frames.std() > 1  # an actual picture, not a blank

    manifest = Manifest.model_validate_json((directory / "manifest.json").read_text())
    assert manifest.status == "finished" and manifest.job_id == job_id and manifest.attempt == 1
    assert manifest.video.frames == 13 and (manifest.video.width, manifest.video.height) == (64, 32)
    assert manifest.spec.prompt == "a lighthouse" and manifest.spec.output_name == "first try"
    assert manifest.engine["name"] == "preview" and manifest.versions["worldplay"]
    assert manifest.host["hostname"] and manifest.timings.duration_s > 0
    assert set(manifest.timings.stages) >= {"render", "verify"}
    manifest_text = (directory / "manifest.json").read_text()
    assert (
        "sk-never-in-a-manifest" not in manifest_text and manifest.settings["rewrite"]["i2v"]["api_key"] == "********"
    )
    assert manifest.settings["redis_url"].count("****") == 1  # the Redis password is masked too
    log = (directory / "log.txt").read_text()
    assert "attempt 1 started" in log and "finished" in log
    assert job.meta["progress"]["fraction"] == 1.0 and job.return_value()["frames"] == 13

    code, out, _ = cli("jobs", "show", job_id, "--json")
    detail = json.loads(out)
    assert detail["status"] == "finished" and detail["result"]["video"] == str(directory / "video.mp4")
    assert "video.mp4" in detail["files"] and detail["log"]


@pytest.mark.slow
def test_foreground_generate_prints_the_video_and_exits_zero(worldplay_env, output_root):
    started = time.monotonic()
    result = subprocess.run(
        [sys.executable, "-m", "worldplay_cli", "generate", "--json", *SMALL],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    answer = json.loads(result.stdout)
    assert answer["status"] == "finished" and answer["frames"] == 13
    assert decode(Path(answer["video"])).shape == (13, 32, 64, 3)
    assert Path(answer["video"]).parent.parent == output_root
    assert time.monotonic() - started < 120


@pytest.mark.slow
def test_queue_and_wait_follows_the_job_to_the_end(cli, output_root, start_worker):
    start_worker("generate")
    code, out, err = cli("generate", "--queue", "--wait", "--json", *SMALL)
    assert code == 0, err
    answer = json.loads(out)
    assert answer["status"] == "finished" and Path(answer["video"]).is_file()


@pytest.mark.slow
def test_logs_follow_prints_lines_until_the_job_ends(cli, output_root, start_worker, monkeypatch):
    monkeypatch.setenv("WORLDPLAY_EXTRA_ENGINES", ENGINES)
    monkeypatch.setenv("PYTHONPATH", TESTS_DIR + os.pathsep + os.environ.get("PYTHONPATH", ""))
    code, out, err = cli("generate", "--queue", "--engine", "slow", "--steps", "15", "--prompt", "x", *SMALL)
    job_id = out.strip()
    start_worker("generate")
    code, out, err = cli("jobs", "logs", job_id, "--follow")
    assert code == 0, err
    assert (
        "attempt 1 started" in out
        and "stage: sleep" in out
        and out.rstrip().splitlines()[-1].split(" ", 2)[2].startswith("finished: ")
    )


@pytest.mark.slow
def test_a_failed_job_leaves_no_video_and_says_why(cli, redis_conn, output_root, start_worker, monkeypatch):
    code, out, err = cli("generate", "--queue", *SMALL)
    job_id = out.strip()
    # Corrupt an input after enqueueing: the worker refuses to render from it.
    (output_root / job_id / "trajectory.json").write_text("{}")
    start_worker("generate", "--burst")
    wait_until(lambda: fetch_job(redis_conn, job_id).get_status().value == "failed", 60, what="the failure")
    failure = fetch_job(redis_conn, job_id).meta["failure"]
    assert failure["kind"] == "bad_input" and "changed since the job was enqueued" in failure["message"]
    assert not (output_root / job_id / "video.mp4").exists()
    code, out, err = cli("jobs", "list", "--status", "failed", "--json")
    assert [row["id"] for row in json.loads(out)["jobs"]] == [job_id]


@pytest.mark.slow
def test_a_killed_worker_is_detected_and_its_job_rerun_elsewhere(
    cli, redis_conn, output_root, start_worker, monkeypatch
):
    monkeypatch.setenv("WORLDPLAY_EXTRA_ENGINES", ENGINES)
    monkeypatch.setenv("PYTHONPATH", TESTS_DIR + os.pathsep + os.environ.get("PYTHONPATH", ""))
    code, out, err = cli("generate", "--queue", "--engine", "slow", "--steps", "20", "--prompt", "x", *SMALL)
    job_id = out.strip()
    pid_file = output_root / job_id / "horse.pid"
    doomed = start_worker("generate")
    horse = int(wait_until(lambda: pid_file.exists() and pid_file.read_text(), 30, what="the job to start"))
    os.kill(doomed.pid, signal.SIGKILL)
    killed_at = time.monotonic()
    # Its work horse notices and ends itself: no second copy keeps running.
    wait_until(lambda: not alive(horse), 10, what="the orphaned work horse to exit")
    start_worker("generate")
    wait_until(lambda: fetch_job(redis_conn, job_id).meta.get("attempt") == 2, 60, what="the re-run")
    detected_after = time.monotonic() - killed_at
    wait_until(
        lambda: fetch_job(redis_conn, job_id).get_status().value in ("finished", "failed"), 60, what="the re-run to end"
    )
    job = fetch_job(redis_conn, job_id)
    assert job.get_status().value == "finished", job.meta
    assert [entry["outcome"] for entry in job.meta["history"]] == ["worker_lost"]
    # Lost after 3 s + reaper every 1 s (+ starting a worker): well inside the documented 60 s bound.
    assert detected_after < 30
    manifest = json.loads((output_root / job_id / "manifest.json").read_text())
    assert manifest["status"] == "finished" and manifest["attempt"] == 2
    assert not [p for p in (output_root / job_id).iterdir() if p.name.startswith(".attempt")]
    assert decode(output_root / job_id / "video.mp4").shape[0] == 13
