"""The job spec contract, the official resolution buckets, settings of the queue and worker."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from worldplay_cli.contract.errors import BadInput
from worldplay_cli.contract.settings import load_settings, mask_url
from worldplay_cli.contract.specs import (
    EXTRA_ENGINES_ENV,
    ImageRef,
    JobSpec,
    Manifest,
    Progress,
    TrajectoryRef,
    bucket_size,
    engine_table,
    new_job_id,
)


def _spec(**changes) -> dict:
    data = {
        "image": ImageRef(source="/x.png", sha256="0" * 64, width=832, height=480).model_dump(),
        "trajectory": TrajectoryRef(source="w-31", num_latents=32, num_frames=125, sha256="1" * 64).model_dump(),
        "engine": "preview",
        "variant": "ar-distilled",
        "frames": 125,
        "steps": 4,
        "guidance": 1.0,
        "width": 832,
        "height": 480,
        "timeout_s": 600,
    }
    data.update(changes)
    return data


@pytest.mark.parametrize(
    ("size", "bucket"),
    [
        ((1920, 1080), (848, 480)),
        ((1280, 704), (848, 464)),
        ((832, 480), (832, 480)),
        ((512, 512), (640, 640)),
        ((1024, 768), (720, 544)),
    ],
)
def test_bucket_matches_the_official_resolution_rule(size, bucket):
    assert bucket_size(*size) == bucket


def test_a_valid_spec_round_trips_through_json():
    spec = JobSpec.model_validate(_spec(prompt="a lighthouse"))
    assert JobSpec.model_validate_json(spec.model_dump_json()) == spec
    assert spec.version == 1


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"colour": "red"}, "Extra inputs are not permitted"),
        ({"engine": "warp-drive"}, "unknown engine 'warp-drive'"),
        ({"variant": "ar-turbo"}, "variant"),
        ({"frames": 121}, "frames=121 but the trajectory has 32 latents"),
        ({"width": 830}, "830 is not a multiple of 16"),
        ({"version": 2}, "version"),
        ({"seed": -1}, "seed"),
        ({"output_name": "../escape"}, "output_name"),
    ],
)
def test_invalid_specs_are_refused(changes, message):
    with pytest.raises(ValidationError, match=message):
        JobSpec.model_validate(_spec(**changes))


@pytest.mark.parametrize(("variant", "latents", "chunk"), [("ar", 5, 4), ("ar-distilled", 30, 4), ("bi", 36, 16)])
def test_latent_count_must_suit_the_variant(variant, latents, chunk):
    frames = 4 * (latents - 1) + 1
    trajectory = TrajectoryRef(source="x", num_latents=latents, num_frames=frames, sha256="1" * 64).model_dump()
    with pytest.raises(ValidationError, match=f"variant {variant} needs a multiple of {chunk} latents"):
        JobSpec.model_validate(_spec(trajectory=trajectory, frames=frames, variant=variant))


def test_native_engines_need_a_prompt(monkeypatch):
    monkeypatch.setenv(EXTRA_ENGINES_ENV, "gpu-thing=somewhere:Engine")
    assert engine_table()["gpu-thing"] == "somewhere:Engine"
    with pytest.raises(ValidationError, match="needs a prompt"):
        JobSpec.model_validate(_spec(engine="gpu-thing"))


def test_manifest_and_progress_forbid_unknown_fields():
    with pytest.raises(ValidationError):
        Progress(stage="render", speed=3)
    with pytest.raises(ValidationError):
        Manifest.model_validate({"version": 1, "job_id": "x"})


def test_job_ids_are_sortable_and_unique():
    ids = {new_job_id() for _ in range(200)}
    assert len(ids) == 200
    assert all(len(job_id) == 22 and job_id[8] == "-" for job_id in ids)


def test_passwords_are_masked_in_urls():
    assert mask_url("rediss://user:hunter2@redis.example:6380/1") == "rediss://user:****@redis.example:6380/1"
    assert mask_url("redis://:hunter2@localhost") == "redis://:****@localhost"
    assert mask_url("unix:///tmp/r.sock?db=1&password=hunter2") == "unix:///tmp/r.sock?db=1&password=****"
    assert mask_url("redis://localhost:6379/0") == "redis://localhost:6379/0"


def test_queue_and_worker_settings_come_from_the_environment(tmp_path):
    environ = {"WORLDPLAY_WORKER__HEARTBEAT_S": "2", "WORLDPLAY_QUEUE__DEFAULT_QUEUE": "gpu8"}
    settings = load_settings(config_path=tmp_path / "none.toml", environ=environ)
    assert settings.worker.heartbeat_s == 2
    assert settings.queue.default_queue == "gpu8"


def test_plumbing_variables_are_ignored_but_unknown_keys_of_a_section_fail(tmp_path):
    environ = {"WORLDPLAY_RUN": "job:1", "WORLDPLAY_SOMETHING_ELSE": "x", "WORLDPLAY_REDIS_URL": "redis://h:1/0"}
    assert load_settings(config_path=tmp_path / "none.toml", environ=environ).redis_url == "redis://h:1/0"
    with pytest.raises(BadInput, match="rewrite.bogus"):
        load_settings(config_path=tmp_path / "none.toml", environ={"WORLDPLAY_REWRITE__BOGUS": "1"})


def test_lost_bound_must_cover_two_heartbeats(tmp_path):
    environ = {"WORLDPLAY_WORKER__HEARTBEAT_S": "10", "WORLDPLAY_WORKER__LOST_AFTER_S": "15"}
    with pytest.raises(BadInput, match="at least twice"):
        load_settings(config_path=tmp_path / "none.toml", environ=environ)
