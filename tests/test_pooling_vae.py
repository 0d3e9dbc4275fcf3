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
            torch.testing.assert_close(decoded[0, :, 4 * index - 3 + offset], expected.expand(3, -1, -1), atol=1e-3, rtol=0)
