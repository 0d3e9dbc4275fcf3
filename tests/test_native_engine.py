"""`worldplay generate --engine native` end to end: CLI -> real Redis -> real worker -> tiny model -> mp4."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow

SMALL = ("--prompt", "a quiet street", "--width", "32", "--height", "48")


def cli(*args: str, timeout: float = 240) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "worldplay_cli", *args],
        capture_output=True,
        text=True,
        env=dict(os.environ),
        timeout=timeout,
    )


def video_frames(path: Path) -> tuple[int, tuple[int, int]]:
    import imageio_ffmpeg

    reader = imageio_ffmpeg.read_frames(str(path))
    meta = next(reader)
    return sum(1 for _ in reader), tuple(meta["size"])


def wait_for_manifest(path: Path, timeout: float) -> dict:
    """The job's manifest once it is no longer 'running' (polled with a deadline)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if path.is_file():
            manifest = json.loads(path.read_text())
            if manifest["status"] != "running":
                return manifest
        time.sleep(0.2)
    raise AssertionError(f"{path} did not reach an end state within {timeout} s")


def test_queued_native_jobs_write_video_manifest_and_chunk_log_and_share_one_load(
    worldplay_env, start_worker, tiny_model_dir, monkeypatch
):
    """`worldplay generate --queue --engine native --model-dir DIR` twice, served by one real worker."""
    from worker.runtime.client import log_dir

    # the job's --model-dir wins over the worker's default when the worker allows it
    monkeypatch.setenv("WORLDPLAY_MODEL_DIR", str(tiny_model_dir.parent / "elsewhere"))
    monkeypatch.setenv("WORLDPLAY_WORKER__MODEL_DIRS", str(tiny_model_dir))
    worker = start_worker("generate")
    directories = []
    for seed in ("1", "2"):
        completed = cli(
            "generate",
            "--queue",
            "--json",
            "--engine",
            "native",
            "--variant",
            "ar-distilled",
            "--pose",
            "w-3, right-4",
            "--model-dir",
            str(tiny_model_dir),
            "--seed",
            seed,
            *SMALL,
        )
        assert completed.returncode == 0, completed.stderr
        directories.append(Path(worldplay_env["WORLDPLAY_OUTPUT_ROOT"]) / json.loads(completed.stdout)["job_id"])
    manifests = [wait_for_manifest(directory / "manifest.json", timeout=180) for directory in directories]
    assert [manifest["status"] for manifest in manifests] == ["finished"] * 2, worker.log_path.read_text()

    # 1. the first job: video, manifest, log
    directory, manifest = directories[0], manifests[0]
    assert video_frames(directory / "video.mp4") == (29, (32, 48))
    assert (manifest["video"]["frames"], manifest["video"]["width"], manifest["video"]["height"]) == (29, 32, 48)
    engine = manifest["engine"]
    assert manifest["status"] == "finished" and engine["name"] == "native" and engine["variant"] == "ar-distilled"
    assert (engine["steps"], engine["guidance_scale"]) == (4, 1.0)
    assert engine["model_dir"] == str(tiny_model_dir)
    assert [chunk["latents"] for chunk in engine["chunks"]] == [[0, 4], [4, 8]]
    assert [chunk["context"] for chunk in engine["chunks"]] == [[], [0, 1, 2, 3]]
    assert all(chunk["denoise_s"] > 0 and chunk["decode_s"] > 0 for chunk in engine["chunks"])
    assert {"encode", "denoise", "decode"} <= set(engine["stages_s"])
    assert {"load", "encode", "generate"} <= set(manifest["timings"]["stages"])
    log = (directory / "log.txt").read_text()
    assert "chunk 1/2" in log and "chunk 2/2" in log and "native: ar-distilled" in log

    # 2. the second job starts on the weights the first one loaded: one load in this worker
    assert [m["engine"]["resident"]["reused_weights"] for m in manifests] == [False, True]
    assert [m["engine"]["resident"]["loads_in_worker"] for m in manifests] == [1, 1]
    assert "resident: reusing ar-distilled weights" in (directories[1] / "log.txt").read_text()
    supervisor_log = (log_dir(worker.pid) / "supervisor.log").read_text()
    loads = [line for line in supervisor_log.splitlines() if "of this worker:" in line]
    assert len(loads) == 1 and "load #1 of this worker: ar-distilled" in loads[0]
    assert video_frames(directories[1] / "video.mp4") == (29, (32, 48))


def test_a_model_directory_without_weights_fails_with_the_download_command(worldplay_env, tmp_path, monkeypatch):
    """Foreground `worldplay generate` (its own one-job worker), model directory from the setting."""
    empty = tmp_path / "no-weights"
    empty.mkdir()
    monkeypatch.setenv("WORLDPLAY_MODEL_DIR", str(empty))
    started = time.monotonic()
    completed = cli("generate", "--engine", "native", "--variant", "bi", "--pose", "w-15", *SMALL)
    assert completed.returncode == 1, completed.stderr
    error = completed.stderr.strip().splitlines()[-1]
    assert error.startswith("error: "), completed.stderr
    assert "lacks what variant bi needs" in error and "bi action checkpoint" in error
    assert f"worldplay download bi --model-dir {empty}" in error
    assert time.monotonic() - started < 120


def test_a_foreground_bi_run_prints_the_result(worldplay_env, tiny_model_dir):
    """Foreground `worldplay generate --engine native --model-dir DIR` (no --queue): waits and reports."""
    completed = cli(
        "generate",
        "--json",
        "--engine",
        "native",
        "--variant",
        "bi",
        "--pose",
        "w-15",
        "--steps",
        "1",
        "--model-dir",
        str(tiny_model_dir),
        "--memory-profile",
        "low-vram",
        *SMALL,
    )
    assert completed.returncode == 0, completed.stderr
    result = json.loads(completed.stdout)
    assert (result["status"], result["frames"], result["width"], result["height"]) == ("finished", 61, 32, 48)
    manifest = json.loads((Path(result["video"]).parent / "manifest.json").read_text())
    assert manifest["engine"]["variant"] == "bi" and manifest["engine"]["guidance_scale"] == 6.0
    # every part of the lowest profile runs on the way: encoders in host memory, streamed blocks, tiled VAE
    assert manifest["engine"]["memory"]["profile"] == "low-vram"
    assert [chunk["latents"] for chunk in manifest["engine"]["chunks"]] == [[0, 16]]


def test_a_job_wanting_more_gpus_than_its_worker_has_is_refused_with_the_fix(
    worldplay_env, start_worker, tiny_model_dir
):
    worker = start_worker("generate", "--gpus", "0")
    completed = cli(
        "generate",
        "--queue",
        "--json",
        "--engine",
        "native",
        "--variant",
        "ar-distilled",
        "--pose",
        "w-3",
        "--model-dir",
        str(tiny_model_dir),
        "--gpus",
        "2",
        *SMALL,
    )
    assert completed.returncode == 0, completed.stderr
    directory = Path(worldplay_env["WORLDPLAY_OUTPUT_ROOT"]) / json.loads(completed.stdout)["job_id"]
    manifest = wait_for_manifest(directory / "manifest.json", timeout=60)
    assert manifest["status"] == "failed", worker.log_path.read_text()
    failure = manifest["failure"]
    assert failure["kind"] == "bad_input" and "asks for 2 GPUs but this worker has 1 (0)" in failure["message"]
    assert "--gpus" in failure["hint"] and not (directory / "video.mp4").exists()
