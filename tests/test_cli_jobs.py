"""`worldplay jobs` as a user types it: ids by prefix, random part or name; every job kind shown; narrow
terminals; what `rm` keeps; and `generate --queue --wait` when nobody serves the queue."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from spine_util import wait_until

SMALL = ("--pose", "w-3", "--width", "64", "--height", "32")


def _queue(cli, *extra: str) -> str:
    code, out, err = cli("generate", "--queue", *SMALL, *extra)
    assert code == 0, err
    return out.strip()


def test_a_job_is_found_by_its_id_prefix_random_part_or_name(cli, redis_conn):
    named = _queue(cli, "--name", "Rainy street 2")
    other = _queue(cli)
    assert named.endswith("-rainy-street-2")
    token = named.split("-")[2]
    for typed in (named, named[:18], token, "Rainy street 2", "Rainy"):
        code, out, err = cli("jobs", "show", typed, "--json")
        assert code == 0 and json.loads(out)["id"] == named, (typed, err)

    code, _, err = cli("jobs", "show", named[:9])  # the date: both jobs
    assert code == 2 and err.count("\n") == 1 and "matches 2 jobs" in err and named in err and other in err

    code, out, err = cli("jobs", "cancel", token, other.split("-")[2], "--json")
    assert code == 0 and [row["job_id"] for row in json.loads(out)] == [named, other]

    code, _, err = cli("jobs", "logs", "no-such-job")
    assert code == 2 and "no job 'no-such-job'" in err


def test_jobs_show_renders_a_train_job(cli, redis_conn):
    from worldplay_cli.contract.queue import enqueue
    from worldplay_cli.contract.settings import load_settings
    from worldplay_cli.contract.specs import new_job_id
    from worldplay_cli.contract.training import TrainConfig, TrainJobSpec

    config = TrainConfig.model_validate(
        {
            "model": {"model_dir": "/models/hy-worldplay"},
            "data": {"path": "/data/prepared"},
            "max_steps": 300,
            "lora": {"rank": 8},
            "checkpoint": {"output_dir": "/runs/lora"},
        }
    )
    job_id = new_job_id()
    enqueue(redis_conn, load_settings(), TrainJobSpec(config=config, gpus=2), job_id, "train")

    code, out, err = cli("jobs", "show", job_id)
    assert code == 0, err
    assert "None" not in out
    assert "train ar, LoRA rank 8, 300 steps on 2 GPU(s)" in out
    assert "model: /models/hy-worldplay" in out and "data: /data/prepared" in out


def test_jobs_list_keeps_whole_ids_at_80_columns(cli, redis_conn, monkeypatch):
    long_prompt = "a very long prompt about a walk through a rainy city street at night " * 3
    ids = [_queue(cli, "--prompt", long_prompt), _queue(cli, "--name", "night walk")]
    monkeypatch.setenv("COLUMNS", "80")
    from worldplay_cli import output

    monkeypatch.setattr(output, "console", output.Console(width=80))
    code, out, err = cli("jobs", "list")
    assert code == 0, err
    assert all(job_id in out for job_id in ids), out
    assert max(len(line) for line in out.splitlines()) <= 80


def test_jobs_rm_says_whether_the_files_were_kept(cli, worldplay_env):
    kept, removed = _queue(cli), _queue(cli)
    output_root = Path(worldplay_env["WORLDPLAY_OUTPUT_ROOT"])
    code, out, err = cli("jobs", "rm", kept)
    assert code == 0, err
    assert "files were kept" in out and str(output_root / kept) in out and "--files" in out
    assert (output_root / kept).is_dir()
    code, out, err = cli("jobs", "rm", removed, "--files")
    assert code == 0 and "kept" not in out and not (output_root / removed).exists()


@pytest.mark.slow
def test_queue_wait_without_a_worker_warns_prints_the_id_first_and_ctrl_c_detaches(worldplay_env, redis_conn):
    from worldplay_cli.jobs import get_row

    process = subprocess.Popen(
        [sys.executable, "-m", "worldplay_cli", "generate", "--queue-name", "nobody-serves", "--wait", *SMALL],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        # A shell runs background jobs with SIGINT ignored, and children inherit that: give Ctrl+C back.
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )
    try:
        first = process.stderr.readline()
        assert first.startswith("job ") and "queued on nobody-serves" in first, first
        job_id = first.split()[1]
        warning = process.stderr.readline()
        assert "no live worker serves queue 'nobody-serves'" in warning
        assert "worldplay worker --queue nobody-serves" in warning
        process.send_signal(signal.SIGINT)
        _, rest = process.communicate(timeout=30)
    finally:
        if process.poll() is None:
            process.kill()
    assert process.returncode == 130
    assert f"detached; job {job_id} keeps going" in rest and f"worldplay jobs cancel {job_id}" in rest
    assert "Traceback" not in rest
    assert get_row(redis_conn, job_id).status == "queued"


def test_queue_without_a_worker_warns_and_a_served_queue_does_not(cli, start_worker, redis_conn):
    from worldplay_cli.contract.settings import load_settings
    from worldplay_cli.jobs import list_workers

    code, out, err = cli("generate", "--queue", *SMALL)
    assert code == 0 and "no live worker serves queue 'generate'" in err and "start one: worldplay worker)" in err
    start_worker("busy")
    wait_until(
        lambda: any("busy" in row.queues for row in list_workers(redis_conn, load_settings())), 60, what="a worker"
    )
    code, out, err = cli("generate", "--queue", "--queue-name", "busy", *SMALL)
    assert code == 0 and "warning" not in err, err


def test_usage_mistakes_are_one_line_with_exit_2(cli):
    for args, expected in [
        (("data", "synth", "out", "--clips", "-1"), "'--clips'"),
        (("generate", "--bogus"), "no such option: --bogus"),
        (("generate", "--pose"), "'--pose' requires an argument"),
    ]:
        code, out, err = cli(*args)
        assert code == 2 and err.startswith("error: ") and err.count("\n") == 1, err
        assert expected in err and "╭" not in err and "--help" in err


def test_version_and_help_without_python_types(cli):
    from worldplay_cli import __version__

    code, out, _ = cli("--version")
    assert code == 0 and out.strip() == f"worldplay {__version__}"
    for command in (("jobs", "list"), ("generate",), ("worker",), ()):
        code, out, _ = cli(*command, "--help")
        assert code == 0 and "Usage" in out
        assert "<bool>" not in out and "<str>" not in out and "list[" not in out, out


@pytest.mark.slow
def test_train_queue_warns_that_a_default_worker_does_not_serve_it(cli, redis_conn, tmp_path, monkeypatch):
    import yaml

    from train_fixtures import train_config_data
    from worldplay_cli.contract.queue import fetch_job

    config = tmp_path / "train.yaml"
    config.write_text(yaml.safe_dump(train_config_data(tmp_path / "run")))
    code, out, err = cli("train", str(config), "--queue")
    assert code == 0, err
    assert "no live worker serves queue 'train'" in err and "worldplay worker --queue train" in err
    job_id = out.strip()
    code, named, err = cli("train", str(config), "--queue-name", "train-big", "--json")  # implies --queue
    assert code == 0 and json.loads(named)["queue"] == "train-big", err
    assert fetch_job(redis_conn, json.loads(named)["job_id"]).origin == "train-big"
    code, out, err = cli("jobs", "show", job_id.split("-")[2])
    assert code == 0 and out.startswith(job_id) and "train ar, full fine-tuning" in out and "None" not in out
    from worldplay_cli import output

    monkeypatch.setattr(output, "console", output.Console(width=120))
    code, out, err = cli("jobs", "list")
    assert code == 0 and "train ar" in out and "native/ar" not in out
