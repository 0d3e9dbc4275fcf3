"""Issue #17: what a job names is chosen among what the worker allows, never added by the job.

Jobs are data anyone with the Redis password can write. These tests enqueue hostile jobs (through the CLI
where it lets them through, else straight through rq) at a real worker process and check that nothing
they name outside the worker's choice is executed, read or copied.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import pytest
from PIL import Image

from official_util import SMALL, STUB, fake_model_dir
from spine_util import wait_until
from worldplay_cli.contract.queue import fetch_job, rq_queue
from worldplay_cli.contract.settings import load_settings
from worldplay_cli.contract.specs import TASK_GENERATE, new_job_id
from worldplay_cli.submit import GenerateRequest, prepare, write_inputs


def _ended(conn, job_id: str) -> str | None:
    status = fetch_job(conn, job_id).get_status().value
    return status if status in ("finished", "failed") else None


@pytest.mark.slow
def test_a_job_runs_only_a_checkout_and_model_dir_the_worker_allows(
    cli, redis_conn, worldplay_env, start_worker, tmp_path, monkeypatch
):
    checkout = tmp_path / "HY-WorldPlay"
    (checkout / "hyvideo").mkdir(parents=True)
    (checkout / "hyvideo" / "generate.py").write_text(STUB)
    planted = tmp_path / "planted"
    (planted / "hyvideo").mkdir(parents=True)
    marker = tmp_path / "marker"
    (planted / "hyvideo" / "generate.py").write_text(
        f"open({str(marker)!r}, 'w').write('ran a job-supplied checkout')\n"
    )
    (tmp_path / "record").mkdir()
    monkeypatch.setenv("STUB_RECORD_DIR", str(tmp_path / "record"))
    monkeypatch.setenv("WORLDPLAY_MODEL_DIR", str(fake_model_dir(tmp_path / "models")))
    # the worker's allowlist names the checkout; it has no default one
    monkeypatch.setenv("WORLDPLAY_WORKER__OFFICIAL_REPOS", str(checkout))

    def enqueue(*args: str) -> str:
        code, out, err = cli(
            "generate", "--queue-name", "official", "--engine", "official", "--prompt", "a street", *SMALL, *args
        )
        assert code == 0, err
        return out.strip()

    hostile = enqueue("--official-repo", str(planted))
    other_models = enqueue(
        "--official-repo", str(checkout), "--model-dir", str(fake_model_dir(tmp_path / "other-models"))
    )
    allowed = enqueue("--official-repo", str(checkout / "hyvideo" / ".."))  # any spelling of an allowed path
    start_worker("official", "--burst")
    for job_id in (hostile, other_models, allowed):
        wait_until(lambda job_id=job_id: _ended(redis_conn, job_id), 120, what=f"job {job_id}")

    failure = fetch_job(redis_conn, hostile).meta["failure"]
    assert failure["kind"] == "refused", failure
    assert failure["message"] == f"official checkout {planted} is not allowed on this worker"
    assert "worker.official_repos" in failure["hint"] and "WORLDPLAY_WORKER__OFFICIAL_REPOS=" in failure["hint"]
    assert not marker.exists()
    failure = fetch_job(redis_conn, other_models).meta["failure"]
    assert (
        failure["kind"] == "refused"
        and "model directory" in failure["message"]
        and "worker.model_dirs" in failure["hint"]
    )
    job = fetch_job(redis_conn, allowed)
    assert _ended(redis_conn, allowed) == "finished", job.meta.get("failure")
    manifest = (Path(worldplay_env["WORLDPLAY_OUTPUT_ROOT"]) / allowed / "manifest.json").read_text()
    assert f'"official_repo": "{checkout}"' in manifest  # the worker's entry, not the job's spelling of it


def _secret_image(path: Path) -> bytes:
    Image.new("RGB", (64, 32), (200, 30, 90)).save(path)
    return path.read_bytes()


@pytest.mark.slow
def test_job_inputs_outside_the_job_directory_are_refused(redis_conn, worldplay_env, start_worker, tmp_path):
    """A spec written straight to Redis names an input by absolute path, by `..`, or through a symlink
    that leaves the job directory: the worker reads none of them and writes no video."""
    secret = tmp_path / "secret" / "private.png"
    secret.parent.mkdir()
    secret_bytes = _secret_image(secret)
    settings = load_settings()
    outputs = Path(settings.output_root)
    outputs.mkdir(parents=True)
    prepared = prepare(GenerateRequest(pose="w-3", width=64, height=32), settings)
    queue = rq_queue(redis_conn, "generate")

    def hostile_job(image_file: str, link: bool = False) -> str:
        job_id = new_job_id()
        directory = write_inputs(settings, job_id, prepared)
        if link:
            os.unlink(directory / image_file)
            os.symlink(secret, directory / image_file)
        spec = prepared.spec.model_dump(mode="json")
        spec["image"].update(file=image_file, sha256=hashlib.sha256(secret_bytes).hexdigest())
        queue.enqueue(TASK_GENERATE, spec, job_id=job_id)
        return job_id

    absolute = hostile_job(str(secret))
    relative = hostile_job(os.path.relpath(secret, outputs / "x"))
    symlinked = hostile_job("input.png", link=True)
    start_worker("generate", "--burst")
    for job_id in (absolute, relative, symlinked):
        wait_until(lambda job_id=job_id: _ended(redis_conn, job_id), 60, what=f"job {job_id}")

    for job_id in (absolute, relative):
        failure = fetch_job(redis_conn, job_id).meta["failure"]
        assert failure["kind"] == "bad_input" and "image.file" in failure["message"], failure
        assert "is not a plain file name in the job directory" in failure["message"]
    failure = fetch_job(redis_conn, symlinked).meta["failure"]
    assert failure["kind"] == "refused", failure
    assert failure["message"] == f"job input image.file 'input.png' resolves to {secret}, outside the job directory"
    # nothing of the secret reached the outputs: no video, and no regular file holding its bytes
    for job_id in (absolute, relative, symlinked):
        assert not (outputs / job_id / "video.mp4").exists()
        assert fetch_job(redis_conn, job_id).get_status().value == "failed"
    copies = [
        path
        for path in outputs.rglob("*")
        if path.is_file() and not path.is_symlink() and path.read_bytes() == secret_bytes
    ]
    assert copies == []
