"""Action-following score: the optical flow of a video against the flow its camera motion predicts.

Observed flow comes from the caller: training validation uses its Horn-Schunck (`worker.training.flow`, torch),
`worldplay eval` uses OpenCV's Farneback (`farneback_flow`, here).

Predicted flow (the FastVideo synthetic-flow idea): per frame pair, the camera motion the controls ask for,
turned into image motion with the Longuet-Higgins linearisation at unit depth (OpenCV axes, x right,
y down, pixel coordinates relative to the image centre, focal length f in pixels):
    ω_x = α_pitch·pitch, ω_y = α_yaw·yaw, T_x = β_strafe·strafe, T_z = β_forward·forward
    u = (xy/f)·ω_x − (f + x²/f)·ω_y − f·T_x + x·T_z
    v = (f + y²/f)·ω_x − (xy/f)·ω_y + y·T_z
Pair (f−1, f) uses motion row f (row f is the motion into frame f). Training reads the motion from the
keyboard and mouse (`motion_features`), eval from the trajectory's poses (`pose_features`). The four gains
are calibrated by least squares on reference videos at the resolution being scored (the fact sheet's
gotcha 10: a calibration made at another size does not transfer), so the units of the motion do not matter.

Per pair, pixels count where max(|pred|, |obs|) is at least `min_magnitude` (scaled from 0.5 px at 640
px width) and at most the 80th percentile; the headline `pixel_epe` is the mean end-point error there.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path

import cv2
import numpy as np

from trajectories.evaluation.images import gray

REFERENCE_WIDTH = 640
MIN_MAGNITUDE_AT_REFERENCE = 0.5
PERCENTILE = 80.0


def farneback_flow(frames: np.ndarray) -> np.ndarray:
    """Flow between every consecutive pair of [F, H, W, 3] uint8 frames -> [F-1, 2, H, W] float32 (u right,
    v down, pixels, taking frame f-1 to frame f)."""
    luma = [gray(frame) for frame in frames]
    flows = [
        cv2.calcOpticalFlowFarneback(first, second, None, 0.5, 3, 9, 3, 5, 1.1, 0)
        for first, second in zip(luma[:-1], luma[1:])
    ]
    return np.stack(flows).transpose(0, 3, 1, 2).astype(np.float32)


def pose_features(poses: np.ndarray) -> np.ndarray:
    """Per frame pair (f-1, f) of camera-to-world poses [F, 4, 4]: (pitch, yaw, strafe, forward) of the move
    into frame f, in frame f-1's camera axes (radians about x and y, translation along x and z) -> [F-1, 4]."""
    relative = np.linalg.inv(poses[:-1]) @ poses[1:]
    rotation_vectors = np.stack([cv2.Rodrigues(np.ascontiguousarray(step[:3, :3]))[0][:, 0] for step in relative])
    return np.stack(
        [rotation_vectors[:, 0], rotation_vectors[:, 1], relative[:, 0, 3], relative[:, 2, 3]], axis=1
    ).astype(np.float64)


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
    """Least-squares gains from (observed flow [P, 2, H, W], motion features [P, 4]) of reference videos.

    Solved through the 4x4 normal equations: each pair's design is the fixed basis scaled per gain by its
    features, so the products with the basis are computed once rather than per pair."""
    height, width = videos[0][0].shape[-2:]
    basis = flow_basis(width, height, focal).reshape(4, -1)
    gram = basis @ basis.T
    normal = np.zeros((4, 4))
    right = np.zeros(4)
    target_energy = 0.0
    samples = pairs = 0
    for flows, features in videos:
        for flow, feature in zip(flows, features):
            if not feature.any():
                continue
            target = flow.reshape(-1).astype(np.float64)
            normal += feature[:, None] * gram * feature[None, :]
            right += feature * (basis @ target)
            target_energy += float(target @ target)
            samples += target.size
            pairs += 1
    if not pairs:
        raise ValueError("calibration needs reference videos with motion")
    gains = np.linalg.lstsq(normal, right, rcond=None)[0]
    residual_energy = max(target_energy - 2 * gains @ right + gains @ normal @ gains, 0.0)
    return FlowCalibration(
        tuple(float(g) for g in gains), float(focal), width, height, float(np.sqrt(residual_energy / samples)), pairs
    )


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
