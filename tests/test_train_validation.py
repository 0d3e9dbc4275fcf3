"""Validation: classical optical flow, action-flow calibration and scores, PSNR/SSIM, HUD videos during training."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from train_fixtures import train_config_data
from worldplay_cli.contract.training import TrainConfig


def test_horn_schunck_recovers_a_subpixel_translation():
    from worker.training.flow import video_flow, warp
    from worker.training.synthetic import face_texture

    texture = torch.from_numpy(face_texture(np.random.default_rng(0), np.array([120.0, 150.0, 90.0]))).permute(2, 0, 1)[
        None
    ]
    shift = torch.zeros(1, 2, *texture.shape[-2:])
    shift[:, 0], shift[:, 1] = 1.5, -0.7
    moved = torch.cat([warp(texture[:, channel : channel + 1], shift) for channel in range(3)], dim=1)
    crop = (slice(None), slice(None), slice(20, 84), slice(20, 84))
    frames = torch.cat([texture[crop], moved[crop]]).permute(0, 2, 3, 1).clamp(0, 255).numpy().astype(np.uint8)
    flow = video_flow(frames)[0, :, 10:-10, 10:-10]
    # sampling at x + s moves the content by -s
    assert abs(flow[0].mean() + 1.5) < 0.1 and abs(flow[1].mean() - 0.7) < 0.1


def test_calibration_on_synthetic_rooms_finds_degrees_and_scores_matching_actions_best():
    from trajectories.evaluation.flow import action_following, calibrate, motion_features
    from worker.training.flow import video_flow
    from worker.training.synthetic import VALIDATION_PATTERNS, SynthOptions, make_clip

    options = SynthOptions(width=32, height=32, num_latents=5)
    videos = []
    for index, pattern in enumerate(VALIDATION_PATTERNS[:8]):
        clip = make_clip(100 + index, options, pattern)
        videos.append((video_flow(clip.frames), motion_features(clip.keyboard, clip.mouse)))
    calibration = calibrate(videos, focal=float(options.pixel_intrinsics()[0, 0]))
    # the mouse is in degrees per frame, so the rotation gains are one degree in radians
    assert calibration.gains[0] == pytest.approx(np.pi / 180, rel=0.15)
    assert calibration.gains[1] == pytest.approx(np.pi / 180, rel=0.15)
    assert calibration.gains[2] > 0 and calibration.gains[3] > 0
    for flows, features in videos:
        right = action_following(flows, features, calibration)["pixel_epe"]
        # the same video judged against other controls (pitch<->yaw, strafe<->forward swapped) scores worse
        wrong = action_following(flows, features[:, [1, 0, 3, 2]], calibration)["pixel_epe"]
        assert right < 0.7 * wrong


def test_psnr_and_ssim():
    from trajectories.evaluation.images import psnr, ssim

    rng = np.random.default_rng(0)
    video = rng.integers(0, 256, (3, 24, 24, 3)).astype(np.uint8)
    assert psnr(video, video) == float("inf") and ssim(video, video) == pytest.approx(1.0)
    noisy = np.clip(video.astype(int) + rng.integers(-20, 21, video.shape), 0, 255).astype(np.uint8)
    assert 20 < psnr(noisy, video) < 30 and ssim(noisy, video) < ssim(video, video)


def test_control_loss_is_one_for_a_model_without_action_parameters_and_not_for_one_with_them(tmp_path):
    from worker.models.checkpoint import is_action_parameter
    from worker.training.dataset import PreparedDataset
    from worker.training.trainer import load_initial_model
    from worker.training.validation import Validator

    config = TrainConfig.model_validate(train_config_data(tmp_path / "run", validation={"max_clips": 2}))
    validator = Validator(
        config, PreparedDataset(config.data.path), tmp_path / "run", torch.device("cpu"), is_main=True
    )
    model = load_initial_model(config, torch.device("cpu"))
    with torch.no_grad():
        losses = validator.control_losses(model, rounds=1)
        assert losses["control_loss_ratio"] != pytest.approx(1.0, abs=1e-6)
        # the action embedding and the camera (PRoPE) branch are the only ways the controls reach the model
        for name, parameter in model.named_parameters():
            if is_action_parameter(name):
                parameter.zero_()
        blind = validator.control_losses(model, rounds=1)
    assert blind["control_loss_own"] == pytest.approx(blind["control_loss_other"], rel=1e-6)
    assert blind["control_loss_ratio"] == pytest.approx(1.0, abs=1e-6)


@pytest.mark.slow
def test_validation_during_training_writes_plain_and_hud_videos_and_metrics(tmp_path):
    from worker.training.media import read_video
    from worker.training.trainer import Hooks, Trainer

    validation = {"every_steps": 2, "max_clips": 1, "sampling_steps": 2, "num_latents": 8}
    config = TrainConfig.model_validate(train_config_data(tmp_path / "run", max_steps=2, validation=validation))
    records = []
    Trainer(config, hooks=Hooks(on_metrics=records.append)).run()

    validations = [record for record in records if record["kind"] == "validation"]
    assert [record["step"] for record in validations] == [0, 2]
    for key in ("psnr", "ssim", "action_pixel_epe", "reference_pixel_epe"):
        assert np.isfinite(validations[-1][key])
    step_dir = tmp_path / "run" / "validation" / "step-000002"
    plain, hud = read_video(step_dir / "val-000.mp4"), read_video(step_dir / "val-000_hud.mp4")
    assert plain.frames.shape == hud.frames.shape == (29, 32, 32, 3)
    assert not np.array_equal(plain.frames, hud.frames)
    summary = json.loads((step_dir / "metrics.json").read_text())
    assert set(summary["per_clip"]) == {"val-000"}
    # one clip has no other clip to borrow controls from: said, not silently dropped
    assert summary["errors"] == ["control_loss skipped: needs two validation clips of at least 12 latents"]
    assert (tmp_path / "run" / "validation" / "flow_calibration.json").is_file()
    lines = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert {line["kind"] for line in lines} == {"train", "validation", "checkpoint"}
