"""Camera following: the camera motion a video shows, estimated with classical two-view geometry, against
the trajectory it was asked to follow.

Per step (frame i to frame i + stride, one latent by default):
- features: SIFT key points of both frames, matched with Lowe's ratio test;
- too few matches (a flat, blurred or fogged frame) -> the step is *untracked*: reported, never guessed;
- two models are fitted with RANSAC: a homography (what any pure rotation gives, whatever the depth) and an
  essential matrix with the trajectory's intrinsics. Where the homography explains the matches as well as
  the essential matrix (no parallax), the rotation is read from it (K⁻¹·H·K, made orthonormal) and the video
  shows no translation; otherwise rotation and translation direction come from the essential matrix
  (`recoverPose`: the translation's scale is not observable from two views);
- rotation error: the angle of R_video · R_trajectoryᵀ, in degrees;
- translation-direction error: the angle between the two unit translation directions, in degrees, on the
  steps where the trajectory moves the camera. A step whose video shows no parallax although the
  trajectory moves counts as 90° (no evidence of the move is as good as a random direction).
Both are in the first frame's camera axes (OpenCV: x right, y down, z forward).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import cv2
import numpy as np

from trajectories.evaluation.images import gray

MIN_MATCHES = 12
RATIO_TEST = 0.8
# a trajectory step moving the camera by less than this (trajectory units; a w step is 0.08) is a rotation
STILL_TRANSLATION = 1e-4
# the homography explains the step (no parallax) when it keeps this share of the essential matrix's inliers
HOMOGRAPHY_SHARE = 0.95
NO_EVIDENCE_DEG = 90.0
# below this median parallax (pixels, once the rotation is taken out) a step shows no translation
MIN_PARALLAX_PX = 0.3
RANSAC_ROUNDS = 200


@dataclass(frozen=True)
class Step:
    first: int
    second: int
    tracked: bool
    matches: int
    model: str  # "essential", "homography" or "" (untracked)
    rotation_error_deg: float | None
    translation_error_deg: float | None
    true_rotation_deg: float
    true_translation: float


def pixel_intrinsics(K_norm: np.ndarray, width: int, height: int) -> np.ndarray:
    return np.diag([width, height, 1.0]) @ np.asarray(K_norm, np.float64)


def rotation_angle_deg(rotation: np.ndarray) -> float:
    cosine = (np.trace(rotation) - 1.0) / 2.0
    return float(np.degrees(np.arccos(np.clip(cosine, -1.0, 1.0))))


def _direction_angle_deg(first: np.ndarray, second: np.ndarray) -> float:
    cosine = float(first @ second / (np.linalg.norm(first) * np.linalg.norm(second)))
    return float(np.degrees(np.arccos(np.clip(cosine, -1.0, 1.0))))


def _orthonormal(matrix: np.ndarray) -> np.ndarray:
    left, _, right = np.linalg.svd(matrix)
    rotation = left @ right
    return rotation if np.linalg.det(rotation) > 0 else -rotation


class FeatureMatcher:
    def __init__(self):
        # small frames (a 128x80 test render) have few strong corners: a low contrast threshold keeps enough
        self.detector = cv2.SIFT_create(nfeatures=2000, contrastThreshold=0.01)
        self.matcher = cv2.BFMatcher(cv2.NORM_L2)

    def detect(self, frame: np.ndarray):
        return self.detector.detectAndCompute(gray(frame), None)

    def match(self, first, second) -> tuple[np.ndarray, np.ndarray]:
        (points_a, descriptors_a), (points_b, descriptors_b) = first, second
        if descriptors_a is None or descriptors_b is None or len(points_a) < 2 or len(points_b) < 2:
            return np.empty((0, 2)), np.empty((0, 2))
        pairs = self.matcher.knnMatch(descriptors_a, descriptors_b, k=2)
        good = [pair[0] for pair in pairs if len(pair) == 2 and pair[0].distance < RATIO_TEST * pair[1].distance]
        a = np.array([points_a[m.queryIdx].pt for m in good], np.float64).reshape(-1, 2)
        b = np.array([points_b[m.trainIdx].pt for m in good], np.float64).reshape(-1, 2)
        return a, b


def _project(points: np.ndarray) -> np.ndarray:
    return points[:, :2] / points[:, 2:3]


def _translation_given_rotation(
    first: np.ndarray, second: np.ndarray, rotation: np.ndarray, tolerance: float, rng: np.random.Generator
) -> np.ndarray | None:
    """Unit t with x_B ~ R·x_A + t for normalised rays [N, 3], the rotation known: each match constrains t to
    a plane, t · ((R·a) × b) = 0; two matches give a candidate (RANSAC), the inliers a least-squares refit,
    and the sign is the one that puts most points in front of both cameras."""
    rotated = first @ rotation.T
    rows = np.cross(rotated, second)
    rows /= np.maximum(np.linalg.norm(rows, axis=1, keepdims=True), 1e-12)
    best = None
    for _ in range(RANSAC_ROUNDS):
        pick = rng.choice(len(rows), 2, replace=False)
        candidate = np.cross(rows[pick[0]], rows[pick[1]])
        if np.linalg.norm(candidate) < 1e-9:
            continue
        inliers = np.abs(rows @ (candidate / np.linalg.norm(candidate))) < tolerance
        if best is None or inliers.sum() > best.sum():
            best = inliers
    if best is None or best.sum() < MIN_MATCHES // 2:
        return None
    translation = np.linalg.svd(rows[best])[2][-1]
    # depths (z_A, z_B) of each match from z_B·b = z_A·(R·a) + t; the right sign makes most of them positive
    in_front = 0
    for ray_a, ray_b in zip(rotated[best], second[best]):
        depths = np.linalg.lstsq(np.stack([ray_a, -ray_b], axis=1), -translation, rcond=None)[0]
        in_front += int(np.all(depths > 0)) - int(np.all(depths < 0))
    return translation if in_front >= 0 else -translation


def estimate_motion(a: np.ndarray, b: np.ndarray, K: np.ndarray) -> tuple[str, np.ndarray, np.ndarray | None] | None:
    """(model, R, unit t or None) taking points of camera A to camera B (x_B = R·x_A + t), or None."""
    if len(a) < MIN_MATCHES:
        return None
    try:
        essential, essential_mask = cv2.findEssentialMat(a, b, K, method=cv2.RANSAC, prob=0.999, threshold=1.0)
    except cv2.error:  # degenerate input (e.g. every match standing still): no essential matrix
        essential, essential_mask = None, None
    homography, homography_mask = cv2.findHomography(a, b, cv2.RANSAC, 1.0)
    essential_inliers = 0 if essential is None else int(essential_mask.sum())
    homography_inliers = 0 if homography is None else int(homography_mask.sum())
    if max(essential_inliers, homography_inliers) < MIN_MATCHES // 2:
        return None
    if homography is not None and homography_inliers >= HOMOGRAPHY_SHARE * essential_inliers:
        model, rotation = "homography", _orthonormal(np.linalg.inv(K) @ homography @ K)
    else:
        _, rotation, _, _ = cv2.recoverPose(essential[:3], a, b, K, mask=essential_mask.copy())
        model = "essential"
    # translation from the parallax left once the rotation is taken out (two unknowns, not five)
    inverse = np.linalg.inv(K)
    rays_a = np.hstack([a, np.ones((len(a), 1))]) @ inverse.T
    rays_b = np.hstack([b, np.ones((len(b), 1))]) @ inverse.T
    focal = float(K[0, 0])
    parallax = np.median(np.linalg.norm(_project(rays_a @ rotation.T) - _project(rays_b), axis=1)) * focal
    if parallax < MIN_PARALLAX_PX:
        return model, rotation, None
    translation = _translation_given_rotation(rays_a, rays_b, rotation, 1.0 / focal, np.random.default_rng(0))
    return model, rotation, translation


def follow(frames: np.ndarray, poses: np.ndarray, K_norm: np.ndarray, stride: int = 4) -> list[Step]:
    """Steps (i, i + stride) over the frames, each estimated from the video and compared with `poses`
    (camera-to-world [F, 4, 4] of the same frames); `K_norm` normalised intrinsics (fx/W, fy/H)."""
    height, width = frames.shape[1:3]
    K = pixel_intrinsics(K_norm, width, height)
    matcher = FeatureMatcher()
    features = {}
    steps = []
    for first in range(0, len(frames) - stride, stride):
        second = first + stride
        for index in (first, second):
            if index not in features:
                features[index] = matcher.detect(frames[index])
        # the truth, as the same map: points of camera `first` to camera `second`
        second_to_first = np.linalg.inv(poses[first]) @ poses[second]
        true_rotation = second_to_first[:3, :3].T
        true_translation = -true_rotation @ second_to_first[:3, 3]
        moved = float(np.linalg.norm(true_translation))
        a, b = matcher.match(features[first], features[second])
        estimate = estimate_motion(a, b, K)
        rotation_error = translation_error = None
        model = ""
        if estimate is not None:
            model, rotation, translation = estimate
            rotation_error = rotation_angle_deg(rotation @ true_rotation.T)
            if moved > STILL_TRANSLATION:
                translation_error = (
                    NO_EVIDENCE_DEG if translation is None else _direction_angle_deg(translation, true_translation)
                )
        steps.append(
            Step(
                first,
                second,
                estimate is not None,
                len(a),
                model,
                rotation_error,
                translation_error,
                rotation_angle_deg(true_rotation),
                moved,
            )
        )
    return steps


def summarize(steps: list[Step]) -> dict:
    """R_dist / T_dist: mean rotation and translation-direction errors (degrees) over the tracked steps."""
    tracked = [step for step in steps if step.tracked]
    rotation = [step.rotation_error_deg for step in tracked]
    translation = [step.translation_error_deg for step in tracked if step.translation_error_deg is not None]
    return {
        "steps": len(steps),
        "tracked": len(tracked),
        "untracked": len(steps) - len(tracked),
        "R_dist": float(np.mean(rotation)) if rotation else None,
        "R_median": float(np.median(rotation)) if rotation else None,
        "T_dist": float(np.mean(translation)) if translation else None,
        "T_median": float(np.median(translation)) if translation else None,
        "translation_steps": len(translation),
        "per_step": [asdict(step) for step in steps],
    }
