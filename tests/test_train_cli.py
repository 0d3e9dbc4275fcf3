"""`worldplay data` / `worldplay train` through the real CLI processes, and train jobs on a real queue."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from train_fixtures import train_config_data


def worldplay(*args: str, env: dict | None = None, timeout: float = 240) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "worldplay_cli", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env={**os.environ, **(env or {})},
    )


def _config_file(tmp_path: Path, **sections) -> Path:
    path = tmp_path / "train.yaml"
    path.write_text(yaml.safe_dump(train_config_data(tmp_path / "run", **sections)))
    return path


def test_bad_configs_and_inputs_fail_before_anything_starts(tmp_path):
    config = tmp_path / "train.yaml"
    data = {
        "model": {"model_dir": "/nonexistent"},
        "data": {"path": "data"},
        "max_steps": 3,
        "checkpoint": {"output_dir": "run"},
    }
    config.write_text(yaml.safe_dump(data))
    result = worldplay("train", str(config), "--set", "method.window_latents=10")
    assert result.returncode == 2
    assert (
        "window_latents 10 is not a multiple of chunk_latents 4" in result.stderr and "Traceback" not in result.stderr
    )
    result = worldplay("train", str(config))
    assert result.returncode == 2 and "model directory /nonexistent does not exist" in result.stderr
    result = worldplay("train", str(config), "--set", "optimiser.lr=1")
    assert result.returncode == 2 and "optimiser: Extra inputs are not permitted" in result.stderr
    result = worldplay(
        "data", "prepare", str(tmp_path / "nothing"), str(tmp_path / "out"), "--model-dir", str(tmp_path)
    )
    assert result.returncode == 2 and "no dataset manifest" in result.stderr
    assert not (tmp_path / "run").exists()
    result = worldplay("data", "synth", str(tmp_path / "raw"), "--latents", "40", "--move-step", "0.1")
    assert result.returncode == 2 and "leaves the room" in result.stderr and "--move-step" in result.stderr
    assert "Traceback" not in result.stderr and not (tmp_path / "raw").exists()


@pytest.mark.parametrize(
    "args, named",
    [
        (["synth", "{out}", "--clips", "-1"], "--clips"),
        (["synth", "{out}", "--clips", "many"], "--clips"),
        (["synth", "{out}", "--seed", "-1"], "--seed"),
        (["synth", "{out}", "--width", "8"], "--width"),
        (["prepare", "{out}", "{out}-prepared", "--model-dir", "{out}", "--width", "17"], "--width 17"),
        (["prepare", "{out}", "{out}-prepared", "--model-dir", "{out}", "--min-frames", "0"], "--min-frames"),
        (["prepare", "{out}", "{out}-prepared", "--model-dir", "{out}", "--max-frames", "9"], "--max-frames 9"),
    ],
)
def test_bad_data_option_values_are_one_line_errors(tmp_path, capsys, args, named):
    from worldplay_cli.app import main

    with pytest.raises(SystemExit) as exited:
        main(["data", *(arg.format(out=tmp_path / "data") for arg in args)])
    stderr = capsys.readouterr().err
    assert exited.value.code == 2
    assert stderr.startswith("error: ") and stderr.count("\n") == 1 and named in stderr, stderr
    assert "Traceback" not in stderr and "\u256d" not in stderr  # no Rich box either
    assert not (tmp_path / "data").exists()


@pytest.mark.slow
def test_synth_train_and_resume_from_the_command_line(tmp_path):
    result = worldplay(
        "data",
        "synth",
        str(tmp_path / "raw"),
        "--clips",
        "1",
        "--validation",
        "0",
        "--width",
        "32",
        "--height",
        "32",
        "--latents",
        "5",
        "--json",
    )
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["frames"] == 17 and (tmp_path / "raw" / "clips" / "train-00000.mp4").is_file()

    config = _config_file(tmp_path, max_steps=3, checkpoint={"output_dir": str(tmp_path / "run"), "every_steps": 3})
    result = worldplay("train", str(config), "--json")
    assert result.returncode == 0, result.stderr
    summary = json.loads(result.stdout)
    assert summary["step"] == 3 and summary["checkpoint"].endswith("checkpoint-3")
    assert "step 3/3" in result.stderr

    result = worldplay("train", "resume", str(tmp_path / "run"), "--set", "max_steps=4", "--json")
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["step"] == 4 and (tmp_path / "run" / "checkpoint-4").is_dir()


def _wait(predicate, timeout: float, what: str):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.2)
    raise AssertionError(f"timed out waiting for {what}")


@pytest.mark.slow
def test_train_job_on_the_queue_reports_progress_and_loss_curve(tmp_path, worldplay_env, redis_conn, start_worker):
    from worldplay_cli.contract.queue import fetch_job
    from worldplay_cli.jobs import get_row, wait_for

    config = _config_file(tmp_path, max_steps=6, checkpoint={"output_dir": str(tmp_path / "ignored"), "every_steps": 3})
    result = worldplay("train", str(config), "--queue", "--json")
    assert result.returncode == 0, result.stderr
    queued = json.loads(result.stdout)
    assert queued["queue"] == "train" and queued["status"] == "queued"
    start_worker("train")

    row = wait_for(redis_conn, queued["job_id"], timeout_s=240)
    assert row.status == "finished", (
        row.failure,
        Path(worldplay_env["WORLDPLAY_OUTPUT_ROOT"], queued["job_id"], "train.log").read_text(),
    )
    assert row.kind == "train" and row.progress["stage"] == "done" and row.progress["fraction"] == 1.0
    meta = fetch_job(redis_conn, queued["job_id"]).meta
    assert meta["train"]["step"] == meta["train"]["max_steps"] == 6 and meta["train"]["checkpoint"].endswith(
        "checkpoint-6"
    )
    assert [point[0] for point in meta["train"]["loss_history"]] == [1, 2, 3, 4, 5, 6]
    job_dir = Path(worldplay_env["WORLDPLAY_OUTPUT_ROOT"]) / queued["job_id"]
    assert (job_dir / "checkpoint-6" / "transformer" / "diffusion_pytorch_model.safetensors").is_file()
    assert not (tmp_path / "ignored").exists()
    assert get_row(redis_conn, queued["job_id"]).output_dir == str(job_dir)


@pytest.mark.slow
def test_canceling_a_train_job_saves_a_checkpoint_first(tmp_path, worldplay_env, redis_conn, start_worker):
    from worldplay_cli.contract.queue import fetch_job
    from worldplay_cli.contract.settings import load_settings
    from worldplay_cli.jobs import cancel_job, get_row

    config = _config_file(
        tmp_path, max_steps=100_000, checkpoint={"output_dir": str(tmp_path / "ignored"), "every_steps": 100_000}
    )
    job_id = json.loads(worldplay("train", str(config), "--queue", "--json").stdout)["job_id"]
    start_worker("train")
    _wait(lambda: (fetch_job(redis_conn, job_id).meta.get("train") or {}).get("step", 0) >= 2, 240, "training steps")

    cancel_job(redis_conn, load_settings(), job_id)

    _wait(lambda: get_row(redis_conn, job_id).status in ("stopped", "canceled", "failed"), 60, "the job to end")
    job_dir = Path(worldplay_env["WORLDPLAY_OUTPUT_ROOT"]) / job_id
    checkpoints = _wait(lambda: sorted(job_dir.glob("checkpoint-*")), 30, "the checkpoint")
    assert int(checkpoints[-1].name.split("-")[1]) >= 2
