"""One evaluation of a video against its trajectory (and optionally a reference video): `eval.json`.

Action following needs a calibration at the video's own size (see `trajectories.evaluation.flow`); with no other
reference at hand it is made on the preview render of the video's first frame along the same trajectory,
the geometrically exact answer for rotations, whose own score is reported beside (`reference_pixel_epe`).
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import cv2
import numpy as np

from trajectories.evaluation.camera import follow, summarize
from trajectories.evaluation.drift import drift_summary
from trajectories.evaluation.flow import action_following, calibrate, farneback_flow, pose_features
from trajectories.evaluation.images import psnr, ssim
from trajectories.evaluation.revisit import revisit_consistency

EVAL_VERSION = 1
EVAL_NAME = "eval.json"
# mean flow (px) below which the calibration reference shows nothing moving: a textureless first frame
NO_MOTION_PX = 1e-3


class EvalError(ValueError):
    """A video or reference that cannot be evaluated (message for the user)."""


def read_video(path: Path) -> np.ndarray:
    """Every frame of a video file as [F, H, W, 3] RGB uint8."""
    capture = cv2.VideoCapture(str(path))
    frames = []
    try:
        while True:
            ok, frame = capture.read()
            if not ok:
                break
            frames.append(cv2.cvtColor(frame, cv2.COLOR_BGR2RGB))
    finally:
        capture.release()
    if len(frames) < 2:
        raise EvalError(f"{path}: not a readable video with at least two frames")
    return np.stack(frames)


def _action_following(frames: np.ndarray, trajectory, poses: np.ndarray, K_norm: np.ndarray) -> dict:
    from trajectories.render import preview_frames

    height, width = frames.shape[1:3]
    features = pose_features(poses)
    reference = np.stack(list(preview_frames(frames[0], trajectory, width, height, hud=False)))[: len(frames)]
    reference_flows = farneback_flow(reference)
    if np.abs(reference_flows).mean() < NO_MOTION_PX:
        return {"skipped": "the preview of the first frame shows no motion to calibrate on (a flat frame)"}
    try:
        calibration = calibrate([(reference_flows, features[: len(reference_flows)])], float(K_norm[0, 0]) * width)
    except ValueError as error:
        return {"skipped": str(error)}
    scores = action_following(farneback_flow(frames), features[: len(frames) - 1], calibration)
    scores["reference_pixel_epe"] = action_following(reference_flows, features, calibration)["pixel_epe"]
    return scores


def evaluate(
    frames: np.ndarray,
    trajectory,
    reference: np.ndarray | None = None,
    chunk_latents: int = 4,
    stride: int = 8,
) -> dict:
    """Every metric of docs/eval.md for [F, H, W, 3] uint8 `frames` that should follow `trajectory`."""
    from trajectories.render import frame_intrinsics, frame_poses

    poses = frame_poses(trajectory)
    K_norm = frame_intrinsics(trajectory)[0]
    notes = []
    if len(frames) != len(poses):
        notes.append(
            f"the video has {len(frames)} frames, the trajectory {len(poses)}: the first {min(len(frames), len(poses))} are compared"
        )
    count = min(len(frames), len(poses))
    frames, poses = frames[:count], poses[:count]
    result = {
        "version": EVAL_VERSION,
        "frames": count,
        "size": [int(frames.shape[2]), int(frames.shape[1])],
        "trajectory": trajectory.source,
        "camera_following": summarize(follow(frames, poses, K_norm, stride)),
        "revisit": revisit_consistency(frames, poses),
        "drift": drift_summary(frames, chunk_latents),
        "action_following": _action_following(frames, trajectory, poses, K_norm),
        "reference": None,
        "notes": notes,
    }
    if reference is not None:
        if reference.shape[1:3] != frames.shape[1:3]:
            height, width = frames.shape[1:3]
            reference = np.stack(
                [cv2.resize(frame, (width, height), interpolation=cv2.INTER_AREA) for frame in reference]
            )
            notes.append(f"the reference was resized to {width}x{height}")
        compared = min(len(reference), count)
        result["reference"] = {
            "frames": compared,
            "psnr": psnr(frames[:compared], reference[:compared]),
            "ssim": ssim(frames[:compared], reference[:compared]),
        }
    return _finite(result)


def _finite(value):
    """JSON has no infinity: a PSNR of identical frames is written as null (and documented so)."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {key: _finite(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [_finite(item) for item in value]
    return value


def evaluate_files(
    video: Path,
    trajectory,
    output: Path,
    reference: Path | None = None,
    chunk_latents: int = 4,
    stride: int = 8,
) -> dict:
    """Evaluate a video file against a trajectory (a `Trajectory`, preset name, pose string or file) and write
    the result to `output`; `EvalError` / `TrajectoryError` for inputs that cannot be evaluated."""
    from trajectories import resolve

    trajectory = resolve(trajectory)
    frames = read_video(Path(video))
    reference_frames = read_video(Path(reference)) if reference is not None else None
    result = evaluate(frames, trajectory, reference_frames, chunk_latents, stride)
    result["video"] = str(video)
    if reference is not None:
        result["reference"]["video"] = str(reference)
    output = Path(output)
    temporary = output.with_name(output.name + ".tmp")
    temporary.write_text(json.dumps(result, indent=2) + "\n")
    temporary.replace(output)
    return result
