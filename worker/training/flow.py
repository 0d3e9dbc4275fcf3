"""Observed optical flow for training validation: coarse-to-fine Horn-Schunck with warping, in torch, between
consecutive frames (on the training device's tensors, no model downloads).

The score it feeds (predicted flow from the controls, calibration, end-point errors) and PSNR/SSIM are the
torch-free `trajectories.evaluation.flow` / `trajectories.evaluation.images`, shared with `worldplay eval`.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

# ---------------------------------------------------------------------------------------------------
# Observed flow


def _gray(frames: np.ndarray) -> torch.Tensor:
    """[N, H, W, 3] uint8 -> [N, 1, H, W] float in [0, 1]."""
    tensor = torch.from_numpy(np.ascontiguousarray(frames)).float() / 255.0
    return (tensor @ torch.tensor([0.299, 0.587, 0.114]))[:, None]


def _blur(image: torch.Tensor) -> torch.Tensor:
    kernel = torch.tensor([1.0, 4.0, 6.0, 4.0, 1.0]) / 16.0
    image = F.conv2d(F.pad(image, (2, 2, 0, 0), mode="replicate"), kernel.view(1, 1, 1, 5))
    return F.conv2d(F.pad(image, (0, 0, 2, 2), mode="replicate"), kernel.view(1, 1, 5, 1))


def warp(image: torch.Tensor, flow: torch.Tensor) -> torch.Tensor:
    """Sample `image` [N, 1, H, W] at x + flow (bilinear, border-clamped)."""
    _, _, height, width = image.shape
    rows, cols = torch.meshgrid(
        torch.arange(height, dtype=image.dtype), torch.arange(width, dtype=image.dtype), indexing="ij"
    )
    x = (cols + flow[:, 0]) / max(width - 1, 1) * 2 - 1
    y = (rows + flow[:, 1]) / max(height - 1, 1) * 2 - 1
    return F.grid_sample(image, torch.stack([x, y], dim=-1), mode="bilinear", padding_mode="border", align_corners=True)


def horn_schunck(
    first: torch.Tensor, second: torch.Tensor, smoothness: float = 0.05, iterations: int = 60, levels: int = 3
) -> torch.Tensor:
    """Flow [N, 2, H, W] (u right, v down, pixels) taking `first` to `second`, both [N, 1, H, W] in [0, 1]."""
    pyramid = [(_blur(first), _blur(second))]
    for _ in range(levels - 1):
        a, b = pyramid[-1]
        if min(a.shape[-2:]) < 16:
            break
        pyramid.append((F.avg_pool2d(_blur(a), 2), F.avg_pool2d(_blur(b), 2)))
    average = torch.tensor([[1.0, 2.0, 1.0], [2.0, 0.0, 2.0], [1.0, 2.0, 1.0]]).view(1, 1, 3, 3) / 12.0
    flow = None
    for a, b in reversed(pyramid):
        if flow is None:
            flow = torch.zeros(a.shape[0], 2, *a.shape[-2:])
        else:
            flow = F.interpolate(flow, size=a.shape[-2:], mode="bilinear", align_corners=False) * 2.0
        warped = warp(b, flow)
        mean = (a + warped) / 2
        grad_x = (
            F.pad(mean, (0, 1, 0, 0), mode="replicate")[..., :, 1:]
            - F.pad(mean, (1, 0, 0, 0), mode="replicate")[..., :, :-1]
        ) / 2
        grad_y = (
            F.pad(mean, (0, 0, 0, 1), mode="replicate")[..., 1:, :]
            - F.pad(mean, (0, 0, 1, 0), mode="replicate")[..., :-1, :]
        ) / 2
        grad_t = warped - a
        denominator = smoothness**2 + grad_x**2 + grad_y**2
        total = flow.clone()
        for _ in range(iterations):
            # smoothness on the whole flow, data term linearised around the current warp
            smooth_u = F.conv2d(F.pad(total[:, :1], (1, 1, 1, 1), mode="replicate"), average)
            smooth_v = F.conv2d(F.pad(total[:, 1:], (1, 1, 1, 1), mode="replicate"), average)
            residual = grad_x * (smooth_u - flow[:, :1]) + grad_y * (smooth_v - flow[:, 1:]) + grad_t
            total = torch.cat(
                [smooth_u - grad_x * residual / denominator, smooth_v - grad_y * residual / denominator], dim=1
            )
        flow = total
    return flow


def video_flow(frames: np.ndarray) -> np.ndarray:
    """Flow between every consecutive pair of [F, H, W, 3] uint8 frames -> [F-1, 2, H, W] float32."""
    gray = _gray(frames)
    with torch.no_grad():
        return horn_schunck(gray[:-1], gray[1:]).numpy()
