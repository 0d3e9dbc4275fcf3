"""The grey pooling VAE (benches of motion): what its encode and decode compute, exactly."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from worker.models.tiny_vae import LUMA, write_pooling_vae
from worker.models.vae import load_vae


def luma(video: torch.Tensor) -> torch.Tensor:
    return (video * torch.tensor(LUMA).view(1, 3, 1, 1, 1)).sum(dim=1)


def test_encode_averages_each_block_and_decode_spreads_motion_over_the_frames(tmp_path):
    directory = write_pooling_vae(tmp_path, scaling_factor=2.5)
    vae = load_vae(directory)  # strict: the official parameter names and shapes
    assert vae.config.scaling_factor == 2.5 and vae.config.latent_channels == 1
    video = torch.rand(1, 3, 9, 16, 24, generator=torch.Generator().manual_seed(0)) * 2 - 1
    grey = luma(video)[0]

    latents = vae.encode(video)
    assert latents.shape == (1, 1, 3, 4, 6)
    # latent i >= 1: the 4x4 block mean over the first two frames of its group (4i-3, 4i-2)
    for index in (1, 2):
        expected = F.avg_pool2d(grey[4 * index - 3 : 4 * index - 1].mean(dim=0)[None], 4)[0]
        torch.testing.assert_close(latents[0, 0, index], expected, atol=1e-6, rtol=0)
    # latent 0 (the first frame alone): the mean of each block's top two rows
    top_rows = grey[0].view(4, 4, 6, 4)[:, :2].mean(dim=(1, 3))
    torch.testing.assert_close(latents[0, 0, 0], top_rows, atol=1e-6, rtol=0)

    decoded = vae.decode(latents)
    assert decoded.shape == (1, 3, 9, 16, 24)
    blocks = latents[0, 0].repeat_interleave(4, dim=-1).repeat_interleave(4, dim=-2)
    torch.testing.assert_close(decoded[0, :, 0], blocks[0].expand(3, -1, -1), atol=1e-3, rtol=0)
    for index in (1, 2):
        for offset in range(4):
            weight = (offset + 1) / 4
            expected = blocks[index - 1] + weight * (blocks[index] - blocks[index - 1])
            torch.testing.assert_close(
                decoded[0, :, 4 * index - 3 + offset], expected.expand(3, -1, -1), atol=1e-3, rtol=0
            )


def test_rooms_through_the_pooling_vae_keep_the_motion_their_controls_explain(tmp_path):
    """What the action-following bench relies on: reference videos decoded by this VAE still move as the
    controls say (positive gains, matching controls score better than swapped ones and than a still video)."""
    import numpy as np

    from trajectories.evaluation.flow import action_following, calibrate, motion_features
    from worker.training.flow import video_flow
    from worker.training.synthetic import VALIDATION_PATTERNS, SynthOptions, make_clip

    vae = load_vae(write_pooling_vae(tmp_path))
    options = SynthOptions(width=48, height=48, num_latents=6)
    videos = []
    for index, pattern in enumerate(VALIDATION_PATTERNS[:8]):
        clip = make_clip(100 + index, options, pattern)
        video = torch.from_numpy(clip.frames).float().permute(3, 0, 1, 2)[None] / 127.5 - 1.0
        decoded = vae.decode(vae.encode(video)).clamp(-1, 1)
        frames = ((decoded[0].permute(1, 2, 3, 0) + 1) * 127.5).round().to(torch.uint8).numpy()
        videos.append((video_flow(frames), motion_features(clip.keyboard, clip.mouse)))
    calibration = calibrate(videos, focal=float(options.pixel_intrinsics()[0, 0]))
    assert all(gain > 0.003 for gain in calibration.gains)
    scores = [
        (
            action_following(flows, features, calibration)["pixel_epe"],
            action_following(flows, features[:, [1, 0, 3, 2]], calibration)["pixel_epe"],
            action_following(np.zeros_like(flows), features, calibration)["pixel_epe"],
        )
        for flows, features in videos
    ]
    right, swapped, still = (float(np.mean(column)) for column in zip(*scores))
    assert right < 0.8 * swapped and right < 0.9 * still
