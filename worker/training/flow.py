"""Action-following score: optical flow of a video against the flow its actions predict (no model downloads).

Observed flow: coarse-to-fine Horn-Schunck with warping, in torch, between consecutive frames.

Predicted flow (the FastVideo synthetic-flow idea): per frame pair, the camera motion the controls ask for,
turned into image motion with the Longuet-Higgins linearisation at unit depth (OpenCV axes, x right,
y down, pixel coordinates relative to the image centre, focal length f in pixels):
    ω_x = α_pitch·pitch, ω_y = α_yaw·yaw, T_x = β_strafe·(D − A), T_z = β_forward·(W − S)
    u = (xy/f)·ω_x − (f + x²/f)·ω_y − f·T_x + x·T_z
    v = (f + y²/f)·ω_x − (xy/f)·ω_y + y·T_z
Pair (f−1, f) uses control row f (row f is the motion into frame f). The four gains are calibrated by
least squares on reference videos at the resolution being scored (the fact sheet's gotcha 10: a
calibration made at another size does not transfer), so the units of the controls do not matter.

Per pair, pixels count where max(|pred|, |obs|) is at least `min_magnitude` (scaled from 0.5 px at 640
px width) and at most the 80th percentile; the headline `pixel_epe` is the mean end-point error there.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

REFERENCE_WIDTH = 640
MIN_MAGNITUDE_AT_REFERENCE = 0.5
PERCENTILE = 80.0


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


# ---------------------------------------------------------------------------------------------------
# Predicted flow and calibration


def motion_features(keyboard: np.ndarray, mouse: np.ndarray) -> np.ndarray:
    """Per frame pair (f-1, f): (pitch, yaw, strafe, forward) from control row f -> [F-1, 4]."""
    strafe = keyboard[1:, 3] - keyboard[1:, 2]
    forward = keyboard[1:, 0] - keyboard[1:, 1]
    return np.stack([mouse[1:, 0], mouse[1:, 1], strafe, forward], axis=1).astype(np.float64)


def flow_basis(width: int, height: int, focal: float) -> np.ndarray:
    """[4, 2, H, W]: the image flow of a unit of each gain (pitch, yaw, strafe, forward)."""
    cols, rows = np.meshgrid(np.arange(width) + 0.5 - width / 2, np.arange(height) + 0.5 - height / 2)
    zeros = np.zeros_like(cols)
    pitch = np.stack([cols * rows / focal, focal + rows**2 / focal])
    yaw = np.stack([-(focal + cols**2 / focal), -cols * rows / focal])
    strafe = np.stack([-focal + zeros, zeros])
    forward = np.stack([cols, rows])
    return np.stack([pitch, yaw, strafe, forward])


@dataclass(frozen=True)
class FlowCalibration:
    gains: tuple[float, float, float, float]  # pitch, yaw, strafe, forward
    focal: float  # pixels at (width, height)
    width: int
    height: int
    residual_rms: float
    pairs: int

    def predict(self, features: np.ndarray) -> np.ndarray:
        """[P, 4] motion features -> predicted flow [P, 2, H, W]."""
        basis = flow_basis(self.width, self.height, self.focal)
        return np.einsum("pk,kchw->pchw", features * np.asarray(self.gains), basis).astype(np.float32)

    def save(self, path: Path) -> None:
        path.write_text(json.dumps(asdict(self), indent=2) + "\n")

    @classmethod
    def load(cls, path: Path) -> FlowCalibration:
        data = json.loads(Path(path).read_text())
        return cls(**{**data, "gains": tuple(data["gains"])})


def calibrate(videos: list[tuple[np.ndarray, np.ndarray]], focal: float) -> FlowCalibration:
    """Least-squares gains from (observed flow [P, 2, H, W], motion features [P, 4]) of reference videos."""
    height, width = videos[0][0].shape[-2:]
    basis = flow_basis(width, height, focal).reshape(4, -1)
    design, target = [], []
    for flows, features in videos:
        for flow, feature in zip(flows, features):
            if not feature.any():
                continue
            design.append((feature[:, None] * basis).T)
            target.append(flow.reshape(-1))
    if not design:
        raise ValueError("calibration needs reference videos with motion")
    design_matrix, target_vector = np.concatenate(design), np.concatenate(target)
    gains, *_ = np.linalg.lstsq(design_matrix, target_vector, rcond=None)
    residual = design_matrix @ gains - target_vector
    return FlowCalibration(
        tuple(float(g) for g in gains), float(focal), width, height, float(np.sqrt(np.mean(residual**2))), len(design)
    )


# ---------------------------------------------------------------------------------------------------
# Scores


def pair_metrics(predicted: np.ndarray, observed: np.ndarray, min_magnitude: float) -> dict[str, float]:
    """Masked comparison of one frame pair's predicted and observed flow [2, H, W]."""
    predicted_magnitude = np.linalg.norm(predicted, axis=0)
    observed_magnitude = np.linalg.norm(observed, axis=0)
    larger = np.maximum(predicted_magnitude, observed_magnitude)
    mask = (larger >= min_magnitude) & (larger <= np.percentile(larger, PERCENTILE))
    if not mask.any():
        return {"pixel_epe": 0.0, "mean_flow_epe": 0.0, "mean_flow_cosine": 1.0}
    error = np.linalg.norm(predicted - observed, axis=0)[mask]
    mean_predicted = predicted[:, mask].mean(axis=1)
    mean_observed = observed[:, mask].mean(axis=1)
    norms = np.linalg.norm(mean_predicted) * np.linalg.norm(mean_observed)
    small = 0.1 * min_magnitude / MIN_MAGNITUDE_AT_REFERENCE
    if np.linalg.norm(mean_predicted) < small and np.linalg.norm(mean_observed) < small:
        cosine = 1.0
    elif norms == 0:
        cosine = 0.0
    else:
        cosine = float(mean_predicted @ mean_observed / norms)
    return {
        "pixel_epe": float(error.mean()),
        "mean_flow_epe": float(np.linalg.norm(mean_predicted - mean_observed)),
        "mean_flow_cosine": cosine,
    }


def action_following(flows: np.ndarray, features: np.ndarray, calibration: FlowCalibration) -> dict[str, float]:
    """Mean of the per-pair metrics of a video (flows [P, 2, H, W], features [P, 4]); lower EPE is better."""
    predicted = calibration.predict(features)
    min_magnitude = MIN_MAGNITUDE_AT_REFERENCE * calibration.width / REFERENCE_WIDTH
    per_pair = [pair_metrics(p, o, min_magnitude) for p, o in zip(predicted, flows)]
    return {key: float(np.mean([metrics[key] for metrics in per_pair])) for key in per_pair[0]}


# ---------------------------------------------------------------------------------------------------
# Reference-based image metrics


def psnr(generated: np.ndarray, reference: np.ndarray) -> float:
    error = np.mean((generated.astype(np.float64) - reference.astype(np.float64)) ** 2)
    return float("inf") if error == 0 else float(10 * np.log10(255.0**2 / error))


def ssim(generated: np.ndarray, reference: np.ndarray) -> float:
    """Mean SSIM (11x11 Gaussian window, sigma 1.5) over frames and channels of [F, H, W, 3] uint8 videos."""
    a = torch.from_numpy(generated.astype(np.float32)).permute(0, 3, 1, 2).reshape(-1, 1, *generated.shape[1:3])
    b = torch.from_numpy(reference.astype(np.float32)).permute(0, 3, 1, 2).reshape(-1, 1, *reference.shape[1:3])
    size = min(11, a.shape[-1], a.shape[-2])
    coords = torch.arange(size, dtype=torch.float32) - (size - 1) / 2
    gauss = torch.exp(-(coords**2) / (2 * 1.5**2))
    window = (gauss[:, None] * gauss[None]) / gauss.sum() ** 2
    window = window.view(1, 1, size, size)

    def filtered(x):
        return F.conv2d(x, window)

    c1, c2 = (0.01 * 255) ** 2, (0.03 * 255) ** 2
    mean_a, mean_b = filtered(a), filtered(b)
    var_a = filtered(a * a) - mean_a**2
    var_b = filtered(b * b) - mean_b**2
    covariance = filtered(a * b) - mean_a * mean_b
    value = ((2 * mean_a * mean_b + c1) * (2 * covariance + c2)) / ((mean_a**2 + mean_b**2 + c1) * (var_a + var_b + c2))
    return float(value.mean())
