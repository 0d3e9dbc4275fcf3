"""One way in: `worldplay generate --queue`, the dashboard's spec file and the editor's submit put the same job
on the queue for the same inputs (all three go through `worldplay_cli.submit.submit_generation`)."""

from __future__ import annotations

import json
from pathlib import Path

from trajectories import resolve
from worldplay_cli.contract.queue import fetch_job
from worldplay_cli.contract.settings import load_settings
from worldplay_cli.tui.dashboard.source import RedisSource
from worldplay_cli.tui.editor.submit import UNSAVED_SOURCE, SubmitForm, submit_trajectory

INPUTS = {"prompt": "a quiet street at dusk", "pose": "w-2, right-1", "engine": "preview", "variant": "ar", "seed": 7}


def _enqueued(conn, settings, job_id: str) -> tuple[dict, dict[str, bytes]]:
    """The spec on the queue, and the files of the job directory."""
    directory = Path(settings.output_root) / job_id
    return fetch_job(conn, job_id).args[0], {path.name: path.read_bytes() for path in directory.iterdir()}


def test_generate_dashboard_and_editor_enqueue_the_same_spec(cli, worldplay_env, redis_conn, tmp_path):
    settings = load_settings()
    code, out, err = cli("generate", "--queue-name", "same", *(f"--{key}={value}" for key, value in INPUTS.items()))
    assert code == 0, err
    from_cli = out.strip()

    request = tmp_path / "request.json"
    request.write_text(json.dumps({**INPUTS, "queue": "same"}))
    from_dashboard = RedisSource(worldplay_env["WORLDPLAY_REDIS_URL"], settings, nvml=False).submit_file(request)

    form = SubmitForm(prompt=INPUTS["prompt"], variant=INPUTS["variant"], seed=INPUTS["seed"], engine=INPUTS["engine"])
    trajectory = resolve(INPUTS["pose"])
    submit = dict(settings=settings, connect=lambda: redis_conn, queue="same")
    from_editor = submit_trajectory(trajectory, form, INPUTS["pose"], **submit)
    unsaved = submit_trajectory(trajectory, form, None, **submit)

    assert from_dashboard.queue == from_editor.queue == "same"
    spec, files = _enqueued(redis_conn, settings, from_cli)
    assert spec["trajectory"]["source"] == INPUTS["pose"] and spec["steps"] and spec["prompt"] == INPUTS["prompt"]
    assert set(files) == {"input.png", "trajectory.json", "spec.json"}
    for submitted in (from_dashboard, from_editor):
        assert _enqueued(redis_conn, settings, submitted.job_id) == (spec, files)
    # A trajectory never saved is the same job, its source named as such.
    unsaved_spec, unsaved_files = _enqueued(redis_conn, settings, unsaved.job_id)
    assert unsaved_spec["trajectory"]["source"] == UNSAVED_SOURCE
    unsaved_spec["trajectory"]["source"] = INPUTS["pose"]
    assert unsaved_spec == spec and unsaved_files["trajectory.json"] == files["trajectory.json"]
    # Each path warns that no worker serves the queue.
    assert "no live worker serves queue 'same'" in err
    assert all(
        "no live worker serves queue 'same'" in (s.warning or "") for s in (from_dashboard, from_editor, unsaved)
    )


def test_a_named_job_carries_its_name_in_its_id_on_every_path(cli, worldplay_env, redis_conn, tmp_path):
    settings = load_settings()
    code, out, err = cli("generate", "--queue", "--pose", "w-3", "--engine", "preview", "--name", "rainy street")
    assert code == 0, err
    request = tmp_path / "request.toml"
    request.write_text('pose = "w-3"\nengine = "preview"\noutput_name = "rainy street"\n')
    submitted = RedisSource(worldplay_env["WORLDPLAY_REDIS_URL"], settings, nvml=False).submit_file(request)
    assert out.strip().endswith("-rainy-street") and submitted.job_id.endswith("-rainy-street")
