"""A distillation run through `worldplay train --queue` and a real worker: the job meta carries the critic's
loss and the student's, and the checkpoint holds the student in the ar-distilled layout."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from train_fixtures import train_config_data


@pytest.mark.slow
def test_a_self_forcing_job_on_the_queue_reports_both_losses(tmp_path, worldplay_env, redis_conn, start_worker):
    from worldplay_cli.contract.queue import fetch_job
    from worldplay_cli.jobs import wait_for

    method = {
        "name": "self_forcing",
        "window_latents": 8,
        "memory_points": 2000,
        "real_score_guidance_scale": 2.0,
        "teacher": {"init": "ar", "attention": "chunk_causal"},
        "critic": {"learning_rate": 1e-3},
    }
    checkpoint = {"output_dir": str(tmp_path / "ignored"), "every_steps": 2}
    config = tmp_path / "train.yaml"
    config.write_text(
        yaml.safe_dump(train_config_data(tmp_path / "run", method=method, max_steps=2, checkpoint=checkpoint))
    )
    result = subprocess.run(
        [sys.executable, "-m", "worldplay_cli", "train", str(config), "--queue", "--json"],
        capture_output=True,
        text=True,
        timeout=240,
        env=dict(os.environ),
    )
    assert result.returncode == 0, result.stderr
    queued = json.loads(result.stdout)
    start_worker("train")
    row = wait_for(redis_conn, queued["job_id"], timeout_s=240)
    job_dir = Path(worldplay_env["WORLDPLAY_OUTPUT_ROOT"]) / queued["job_id"]
    assert row.status == "finished", (row.failure, (job_dir / "train.log").read_text())
    train = fetch_job(redis_conn, queued["job_id"]).meta["train"]
    assert [point[0] for point in train["loss_history"]] == [1, 2]
    assert [point[0] for point in train["generator_loss_history"]] == [1, 2]
    assert train["generator_loss"] > 0 and train["critic_lr"] > 0  # the dashboard shows both losses and lrs
    assert (job_dir / "checkpoint-2" / "ar_distilled_action_model" / "diffusion_pytorch_model.safetensors").is_file()
