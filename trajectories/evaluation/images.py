"""Reference-based image metrics on uint8 videos [F, H, W, 3]: PSNR and SSIM, plus the sharpness `drift` uses."""

from __future__ import annotations

import cv2
import numpy as np

SSIM_WINDOW = 11
SSIM_SIGMA = 1.5


def psnr(generated: np.ndarray, reference: np.ndarray) -> float:
    error = np.mean((generated.astype(np.float64) - reference.astype(np.float64)) ** 2)
    return float("inf") if error == 0 else float(10 * np.log10(255.0**2 / error))


def ssim(generated: np.ndarray, reference: np.ndarray) -> float:
    """Mean SSIM (11x11 Gaussian window, sigma 1.5, valid positions only) over frames and channels."""
    a = np.moveaxis(np.asarray(generated, np.float64), -1, 1).reshape(-1, *generated.shape[1:3])
    b = np.moveaxis(np.asarray(reference, np.float64), -1, 1).reshape(-1, *reference.shape[1:3])
    height, width = a.shape[1:]
    size = min(SSIM_WINDOW, width, height)
    coords = np.arange(size) - (size - 1) / 2
    gauss = np.exp(-(coords**2) / (2 * SSIM_SIGMA**2))
    gauss /= gauss.sum()
    anchor = size // 2
    # cv2 filters every position (with a border); only the windows wholly inside the image count
    rows = slice(anchor, height - size + 1 + anchor)
    cols = slice(anchor, width - size + 1 + anchor)

    def filtered(planes: np.ndarray) -> np.ndarray:
        return np.stack([cv2.sepFilter2D(plane, cv2.CV_64F, gauss, gauss)[rows, cols] for plane in planes])

    c1, c2 = (0.01 * 255) ** 2, (0.03 * 255) ** 2
    mean_a, mean_b = filtered(a), filtered(b)
    var_a = filtered(a * a) - mean_a**2
    var_b = filtered(b * b) - mean_b**2
    covariance = filtered(a * b) - mean_a * mean_b
    value = ((2 * mean_a * mean_b + c1) * (2 * covariance + c2)) / ((mean_a**2 + mean_b**2 + c1) * (var_a + var_b + c2))
    return float(value.mean())


def gray(frame: np.ndarray) -> np.ndarray:
    """HxWx3 RGB uint8 -> HxW uint8 luma."""
    return cv2.cvtColor(np.ascontiguousarray(frame), cv2.COLOR_RGB2GRAY)


def sharpness(frame: np.ndarray) -> float:
    """Variance of the Laplacian of the luma: falls as a frame smears into flat blobs."""
    return float(cv2.Laplacian(gray(frame), cv2.CV_64F).var())
