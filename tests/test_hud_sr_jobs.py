"""`--hud`, `worldplay jobs hud` and `--sr --keep-pre-sr` through the queue: real CLI, Redis, worker, mp4s.

A job's video.mp4 is always clean; the HUD video sits beside it; with SR, video.mp4 is the 720p bucket of
the 480p generation and video_480p.mp4 the kept 480p video."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from worker.video import read_video_frames, read_video_info


def run_cli(*args: str, timeout: float = 240) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "worldplay_cli", *args], capture_output=True, text=True, env=dict(os.environ),
        timeout=timeout,
    )  # fmt: skip


def enqueue(*args: str) -> str:
    completed = run_cli("generate", "--queue", "--json", *args)
    assert completed.returncode == 0, completed.stderr
    return json.loads(completed.stdout)["job_id"]


def finished_manifest(directory: Path, timeout: float, worker) -> dict:
    """The job's manifest once it has ended (polled with a deadline); it must have finished."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        path = directory / "manifest.json"
        if path.is_file():
            manifest = json.loads(path.read_text())
            if manifest["status"] != "running":
                assert manifest["status"] == "finished", (manifest.get("failure"), worker.log_path.read_text()[-3000:])
                return manifest
        time.sleep(0.2)
    raise AssertionError(f"{directory} did not finish within {timeout} s: {worker.log_path.read_text()[-3000:]}")


def differing_fraction(first: np.ndarray, second: np.ndarray) -> float:
    return float(np.mean(np.any(np.abs(first.astype(int) - second.astype(int)) > 40, axis=-1)))


def test_hud_video_beside_a_clean_video_and_added_afterwards(worldplay_env, start_worker):
    worker = start_worker("generate")
    small = ("--engine", "preview", "--pose", "w-3, right-4", "--width", "128", "--height", "64")
    with_hud, without = enqueue(*small, "--hud"), enqueue(*small)
    root = Path(worldplay_env["WORLDPLAY_OUTPUT_ROOT"])
    manifests = [finished_manifest(root / job_id, 120, worker) for job_id in (with_hud, without)]

    # 1. --hud: video_hud.mp4 beside video.mp4, same frames and size; video.mp4 is the job without --hud's
    clean, hud = (read_video_frames(root / with_hud / name) for name in ("video.mp4", "video_hud.mp4"))
    assert clean.shape == hud.shape == (29, 64, 128, 3)
    plain = read_video_frames(root / without / "video.mp4")
    assert differing_fraction(clean, plain) == 0.0
    assert differing_fraction(clean, hud) > 0.01  # the keys are drawn only on the HUD video
    assert [video["file"] for video in manifests[0]["videos"]] == ["video_hud.mp4"]
    assert manifests[1]["videos"] == [] and not (root / without / "video_hud.mp4").exists()

    # 2. `worldplay jobs hud` adds one afterwards, lists it in the manifest, and refuses a second
    completed = run_cli("jobs", "hud", without, "--json")
    assert completed.returncode == 0, completed.stderr
    added = json.loads(completed.stdout)
    assert (added["frames"], added["width"], added["height"]) == (29, 128, 64)
    later = read_video_frames(root / without / "video_hud.mp4")
    assert later.shape == clean.shape and differing_fraction(plain, later) > 0.01
    # the same keys on the same frames as the HUD the preview job drew (the preview's own HUD may also
    # carry its coverage label, drawn top-left; compare the key clusters at the bottom)
    assert differing_fraction(later[:, 40:], hud[:, 40:]) < 0.02
    manifest = json.loads((root / without / "manifest.json").read_text())
    assert [video["file"] for video in manifest["videos"]] == ["video_hud.mp4"]
    again = run_cli("jobs", "hud", without)
    assert again.returncode != 0 and "already has video_hud.mp4" in again.stderr


@pytest.mark.slow
@pytest.mark.timeout(1500)
def test_tiny_native_sr_keeps_the_480p_video_and_draws_the_hud(
    worldplay_env, start_worker, tiny_model_dir, monkeypatch
):
    """`generate --sr --keep-pre-sr --hud` on the tiny model through the queue: three videos, right sizes."""
    monkeypatch.setenv("WORLDPLAY_MODEL_DIR", str(tiny_model_dir))
    worker = start_worker("generate")
    job_id = enqueue(
        "--engine", "native", "--variant", "ar-distilled", "--pose", "w-3", "--prompt", "a quiet street",
        "--width", "848", "--height", "480", "--sr", "--keep-pre-sr", "--hud",
    )  # fmt: skip
    directory = Path(worldplay_env["WORLDPLAY_OUTPUT_ROOT"]) / job_id
    manifest = finished_manifest(directory, 1400, worker)

    # 720p bucket of the 480p size (the official map: 848x480 -> 1280x720), every video 13 frames
    assert read_video_info(directory / "video.mp4")[:3] == (13, 1280, 720)
    assert read_video_info(directory / "video_480p.mp4")[:3] == (13, 848, 480)
    assert read_video_info(directory / "video_hud.mp4")[:3] == (13, 1280, 720)
    assert (manifest["video"]["width"], manifest["video"]["height"]) == (1280, 720)
    assert sorted(video["file"] for video in manifest["videos"]) == ["video_480p.mp4", "video_hud.mp4"]
    # the manifest records both stages: the 480p generation and the SR stage
    engine = manifest["engine"]
    assert (engine["width"], engine["height"], engine["steps"]) == (848, 480, 4)
    stage = engine["super_resolution"]
    assert (stage["width"], stage["height"], stage["steps"], stage["shift"], stage["strength"]) == (
        1280, 720, 6, 2.0, 0.7,
    )  # fmt: skip
    assert stage["latents"] == [4, 45, 80] and stage["pre_sr_video"] == "video_480p.mp4"
    assert {"denoise", "decode", "sr_denoise", "sr_decode"} <= set(engine["stages_s"])
    assert {"generate", "super-resolution", "hud"} <= set(manifest["timings"]["stages"])
    log = (directory / "log.txt").read_text()
    assert "stage: super-resolution" in log


SPEC = {
    "prompt": "a street", "image": {"source": "x.png", "sha256": "0" * 64, "width": 1920, "height": 1080},
    "trajectory": {"source": "w-3", "num_latents": 4, "num_frames": 13, "sha256": "0" * 64},
    "engine": "native", "variant": "ar-distilled", "frames": 13, "steps": 4, "guidance": 1.0,
    "width": 848, "height": 480, "timeout_s": 60,
}  # fmt: skip


def test_the_spec_names_every_video_and_its_size_and_old_hud_specs_still_validate():
    from pydantic import ValidationError

    from worldplay_cli.contract.specs import JobSpec

    plain = JobSpec.model_validate(SPEC)
    assert (plain.hud, plain.sr, plain.videos()) == (False, False, {"video.mp4": (848, 480)})
    # a spec written before `sr` existed, with the old hud=True, gets the HUD as a separate video
    old = JobSpec.model_validate({**SPEC, "engine": "preview", "hud": True})
    assert old.videos() == {"video.mp4": (848, 480), "video_hud.mp4": (848, 480)}
    full = JobSpec.model_validate({**SPEC, "sr": True, "keep_pre_sr": True, "hud": True})
    assert full.videos() == {
        "video.mp4": (1280, 720), "video_480p.mp4": (848, 480), "video_hud.mp4": (1280, 720),
    }  # fmt: skip
    assert (full.summary("q")["width"], full.summary("q")["height"]) == (1280, 720)
    # `worldplay jobs show` says what else the job writes
    from worldplay_cli.jobs import describe_spec

    assert "also: 720p super-resolution, keeps video_480p.mp4; HUD video" in describe_spec(full.model_dump())
    assert not any(line.startswith("also:") for line in describe_spec(plain.model_dump()))
    for bad, reason in (
        ({"keep_pre_sr": True}, "keep_pre_sr needs sr"),
        ({"sr": True, "engine": "preview"}, "engine preview has no super-resolution stage"),
        ({"sr": True, "width": 800}, "800x480 is not one"),
    ):
        with pytest.raises(ValidationError, match=reason):
            JobSpec.model_validate({**SPEC, **bad})


def test_generate_dry_run_resolves_sr_and_hud_into_the_spec(tiny_model_dir):
    completed = run_cli(
        "generate", "--dry-run", "--engine", "native", "--model-dir", str(tiny_model_dir), "--prompt", "x",
        "--pose", "w-3", "--width", "832", "--height", "480", "--sr", "--keep-pre-sr", "--hud",
    )  # fmt: skip
    assert completed.returncode == 0, completed.stderr
    spec = json.loads(completed.stdout)
    assert (spec["sr"], spec["keep_pre_sr"], spec["hud"], spec["width"], spec["height"]) == (True, True, True, 832, 480)
