"""`worldplay doctor`: real probe subprocess, real ffmpeg, real Redis; the recommendation logic per hardware."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
import torch

from worker.doctor import gpu_sets, recommend
from worker.models.checkpoint import ACTION_CHECKPOINT_DIRS, WEIGHTS_NAME
from worker.pipeline.model_dir import SHARED_PIECES

GB = 10**9
NO_FLASH = {"installed": False}


def run_doctor(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "worldplay_cli", "doctor", *args],
        capture_output=True,
        text=True,
        env=dict(os.environ),
        timeout=180,
    )


def fake_model_dir(root, variants):
    """The files the layout check looks for (contents are not read by the doctor)."""
    paths = [path for _, files, _ in SHARED_PIECES for path in files]
    paths += [f"{ACTION_CHECKPOINT_DIRS[variant]}/{WEIGHTS_NAME}" for variant in variants]
    for path in paths:
        (root / path).parent.mkdir(parents=True, exist_ok=True)
        (root / path).write_bytes(b"")
    return root


@pytest.mark.slow
def test_doctor_json_reports_this_environment(worldplay_env, tmp_path):
    model_dir = fake_model_dir(tmp_path / "models", ["ar-distilled", "bi"])
    done = run_doctor("--json", "--model-dir", str(model_dir))
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    checks = {check["name"]: check for check in report["checks"]}
    assert checks["torch"]["status"] == "ok" and torch.__version__ in checks["torch"]["detail"]
    assert checks["cuda"]["status"] == "warn"  # the test machine has no GPU
    assert checks["ffmpeg"]["status"] == "ok" and "ffmpeg version" in checks["ffmpeg"]["detail"]
    assert checks["redis"]["status"] == "ok" and "reachable" in checks["redis"]["detail"]
    assert checks["output root"]["status"] == "ok"
    assert checks["model dir"]["status"] == "ok" and "bi, ar-distilled" in checks["model dir"]["detail"]
    variants = report["probe"]["model_dir"]["variants"]
    assert variants["ar"]["ready"] is False and variants["ar"]["fix"] == "worldplay download ar"
    assert report["recommendation"]["engine"] == "preview"
    assert report["recommendation"]["variant"] == "ar-distilled"
    # the optional SR stage: not a failure, the command that fetches it
    assert checks["super-resolution"]["status"] == "ok" and "not downloaded" in checks["super-resolution"]["detail"]
    assert checks["super-resolution"]["hint"] == "worldplay download sr"


@pytest.mark.slow
def test_doctor_fails_on_unreachable_redis_and_missing_interpreter(worldplay_env, tmp_path):
    done = run_doctor("--redis-url", "redis://127.0.0.1:1/0", "--python", str(tmp_path / "no-python"))
    assert done.returncode == 1
    assert "fail" in done.stdout and "cannot reach Redis" in done.stdout
    assert "cannot run the worker probe" in done.stdout
    assert done.stderr.strip().splitlines()[-1].startswith("error: 2 check(s) failed: worker, redis")


TORCH_CPU = {"installed": True, "gpus": [], "nccl_available": False}


def torch_with(count: int, memory_gb: float) -> dict:
    gpus = [
        {"index": index, "name": "GPU", "memory_bytes": int(memory_gb * GB), "capability": "9.0"}
        for index in range(count)
    ]
    return {"installed": True, "gpus": gpus, "nccl_available": True}


def test_recommendation_without_torch_or_gpu_is_the_preview_engine():
    advice = recommend({"installed": False}, NO_FLASH, [])
    assert advice["engine"] == "preview" and "pip install 'worldplay[worker]'" in advice["notes"][0]
    advice = recommend(TORCH_CPU, NO_FLASH, ["ar"])
    assert (advice["engine"], advice["variant"]) == ("preview", "ar")


def test_recommendation_for_one_80gb_gpu_offloads_the_encoders():
    # the README's 72 GB at sp=1 fits an 80 GB GPU only with the encoders off the GPU during denoising
    advice = recommend(torch_with(1, 80), {"installed": True}, ["ar-distilled"])
    assert (advice["engine"], advice["gpus_per_job"], advice["memory_profile"]) == ("native", 1, "offload")
    assert advice["worker_command"] == "worldplay worker --gpus 0"


def test_recommendation_for_eight_48gb_gpus_uses_sequence_parallel():
    # sp=2 would need streamed transformer blocks (slow); sp=4 keeps the transformer resident
    advice = recommend(torch_with(8, 48), NO_FLASH, ["ar-distilled"])
    assert (advice["gpus_per_job"], advice["memory_profile"]) == (4, "offload")
    assert advice["worker_command"] == "worldplay worker --gpus 0-3,4-7"
    assert any("flash-attn" in note for note in advice["notes"])


def test_recommendation_adds_no_sr_note_when_jobs_with_sr_fit_the_same_rung():
    # on 8 x 48 GB at sp=4 the 480p job keeps its transformer resident; the SR stage's own transformer and
    # 720p working set still fit the offload rung, which parks the 480p blocks while it runs
    advice = recommend(torch_with(8, 48), {"installed": True}, ["ar-distilled"])
    assert not any("--sr" in note for note in advice["notes"])  # same rung with and without SR


def test_recommendation_warns_when_nothing_fits():
    advice = recommend(torch_with(1, 24), {"installed": True}, ["bi"])
    assert advice["variant"] == "bi" and advice["memory_profile"] == "low-vram"
    assert "expect out-of-memory" in advice["notes"][0]


def test_gpu_sets():
    assert gpu_sets(8, 1) == "0,1,2,3,4,5,6,7"
    assert gpu_sets(8, 4) == "0-3,4-7"
    assert gpu_sets(6, 4) == "0-3"
