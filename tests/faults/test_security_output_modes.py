"""Issue #17: job directories and their files are private unless `output_mode = "shared"`, whoever writes
them (the CLI its inputs, the worker its log, manifest and video)."""

from __future__ import annotations

import stat
from pathlib import Path

import pytest

from spine_util import wait_until
from worldplay_cli.contract.queue import fetch_job

SMALL = ("--pose", "w-3", "--width", "64", "--height", "32")
FILES = {"input.png", "trajectory.json", "spec.json", "log.txt", "manifest.json", "video.mp4"}


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


@pytest.mark.slow
@pytest.mark.parametrize("setting, directory_mode, file_mode", [(None, 0o700, 0o600), ("shared", 0o755, 0o644)])
def test_a_preview_job_leaves_its_files_with_the_output_mode(
    cli, redis_conn, worldplay_env, start_worker, monkeypatch, setting, directory_mode, file_mode
):
    if setting:
        monkeypatch.setenv("WORLDPLAY_OUTPUT_MODE", setting)
    root = Path(worldplay_env["WORLDPLAY_OUTPUT_ROOT"])
    code, out, err = cli("generate", "--queue", "--prompt", "a lighthouse", *SMALL)
    assert code == 0, err
    job_id = out.strip()
    start_worker("generate", "--burst")
    wait_until(lambda: fetch_job(redis_conn, job_id).get_status().value in ("finished", "failed"), 60, what="the job")
    assert fetch_job(redis_conn, job_id).get_status().value == "finished", fetch_job(redis_conn, job_id).meta

    directory = root / job_id
    assert _mode(root) == directory_mode  # created by this submit
    assert _mode(directory) == directory_mode
    assert {path.name for path in directory.iterdir()} == FILES
    assert {path.name: _mode(path) for path in directory.iterdir()} == dict.fromkeys(FILES, file_mode)
