"""Drift score of a long rollout: how far the look of its late chunks departs from its first chunk.

Long autoregressive rollouts fail by drifting: colours saturate or wash out, exposure creeps, textures
smear into flat blobs. The score is reference-free, so it works for rollouts longer than any clip:
- per video frame, the colour histogram of each RGB channel (32 bins, normalised);
- per chunk, the mean histogram of its frames (the first chunk of c latents decodes to 4(c−1)+1 frames,
  every later chunk to 4c);
- the drift of chunk k is the total-variation distance between its histograms and the first chunk's,
  averaged over the channels: 0 is the same colour distribution, 1 disjoint ones;
- `drift` is the mean over the last quarter of the chunks (at least one) of that curve.
A camera that legitimately turns to other surfaces changes histograms too, so a generated video's drift
is read beside the reference video's over the same frames (`reference_drift`) when a reference exists.

`drift_summary` (`worldplay eval`) adds per-chunk brightness, contrast, saturation and sharpness beside it.
"""

from __future__ import annotations

import cv2
import numpy as np

from trajectories.evaluation.images import gray, sharpness

HISTOGRAM_BINS = 32


def chunk_bounds(num_frames: int, chunk_latents: int) -> list[tuple[int, int]]:
    """(first, end) video frames of each latent chunk of a decoded rollout."""
    bounds, start = [], 0
    size = 4 * (chunk_latents - 1) + 1
    while start < num_frames:
        bounds.append((start, min(start + size, num_frames)))
        start += size
        size = 4 * chunk_latents
    return bounds


def chunk_histograms(frames: np.ndarray, chunk_latents: int) -> np.ndarray:
    """[chunks, 3, bins]: the mean normalised colour histogram of each chunk of [F, H, W, 3] uint8 frames."""
    pixels = frames.reshape(frames.shape[0], -1, 3)
    edges = np.linspace(0, 256, HISTOGRAM_BINS + 1)
    per_frame = np.stack(
        [np.stack([np.histogram(frame[:, channel], edges)[0] for channel in range(3)]) for frame in pixels]
    ).astype(np.float64)
    per_frame /= per_frame.sum(axis=-1, keepdims=True)
    return np.stack([per_frame[first:end].mean(axis=0) for first, end in chunk_bounds(len(frames), chunk_latents)])


def drift_curve(frames: np.ndarray, chunk_latents: int) -> list[float]:
    """Per chunk, the total-variation distance of its colour histograms to the first chunk's."""
    histograms = chunk_histograms(frames, chunk_latents)
    distances = 0.5 * np.abs(histograms - histograms[:1]).sum(axis=-1).mean(axis=-1)
    return [float(value) for value in distances]


def drift_score(frames: np.ndarray, chunk_latents: int) -> float:
    curve = drift_curve(frames, chunk_latents)
    late = max(1, len(curve) // 4)
    return float(np.mean(curve[-late:]))


def chunk_statistics(frames: np.ndarray, chunk_latents: int, curve: list[float]) -> list[dict[str, float]]:
    """Per chunk of [F, H, W, 3] uint8 frames: mean brightness and contrast (luma mean and standard deviation,
    0-255), mean saturation (HSV S, 0-255), sharpness (variance of the Laplacian) and its `drift_curve` value."""
    rows = []
    for (first, end), drift in zip(chunk_bounds(len(frames), chunk_latents), curve):
        chunk = frames[first:end]
        luma = np.stack([gray(frame) for frame in chunk]).astype(np.float64)
        saturation = [cv2.cvtColor(np.ascontiguousarray(frame), cv2.COLOR_RGB2HSV)[..., 1].mean() for frame in chunk]
        rows.append(
            {
                "first_frame": first,
                "frames": end - first,
                "brightness": float(luma.mean()),
                "contrast": float(luma.std(axis=(1, 2)).mean()),
                "saturation": float(np.mean(saturation)),
                "sharpness": float(np.mean([sharpness(frame) for frame in chunk])),
                "histogram_drift": drift,
            }
        )
    return rows


def drift_summary(frames: np.ndarray, chunk_latents: int) -> dict:
    """The per-chunk statistics and how the late chunks compare with the first: `drift` (histogram), the
    ratios of sharpness and contrast (1 = unchanged, below 1 = smeared / washed out) and the brightness shift."""
    curve = drift_curve(frames, chunk_latents)
    chunks = chunk_statistics(frames, chunk_latents, curve)
    late = chunks[-max(1, len(chunks) // 4) :]
    first = chunks[0]

    def ratio(key: str) -> float:
        return float(np.mean([row[key] for row in late]) / first[key]) if first[key] > 0 else 1.0

    return {
        "chunk_latents": chunk_latents,
        "chunks": chunks,
        "drift": float(np.mean([row["histogram_drift"] for row in late])),
        "sharpness_ratio": ratio("sharpness"),
        "contrast_ratio": ratio("contrast"),
        "brightness_shift": float(np.mean([row["brightness"] for row in late]) - first["brightness"]),
    }
