"""Reference image -> generation size and the [-1, 1] tensor the VAE encodes; decoded video -> uint8 frames.

The size is the bucket of about 640² pixels (sides multiples of 16) whose aspect ratio is closest to the
image's, unless the user fixes width and height; the image is LANCZOS-resized to cover that size and
centre-cropped, as the official pipeline does for the VAE condition.
"""

from __future__ import annotations

import numpy as np
import torch
from PIL import Image

from worker.pipeline.encoders import bucket_resolution, resize_center_crop

SIZE_MULTIPLE = 16


class ImageSizeError(ValueError):
    pass


def as_pil(image: Image.Image | np.ndarray) -> Image.Image:
    """An RGB PIL image from a PIL image or an H×W×3 uint8 array."""
    if isinstance(image, np.ndarray):
        image = Image.fromarray(image)
    return image.convert("RGB")


def generation_size(image: Image.Image, width: int | None = None, height: int | None = None) -> tuple[int, int]:
    """(width, height) of the video: the image's bucket, or the user's size (both or neither, multiples of 16)."""
    if (width is None) != (height is None):
        raise ImageSizeError("give both width and height, or neither")
    if width is None:
        bucket_height, bucket_width = bucket_resolution(image.width, image.height)
        return bucket_width, bucket_height
    for name, value in (("width", width), ("height", height)):
        if value <= 0 or value % SIZE_MULTIPLE:
            raise ImageSizeError(f"{name} {value} must be a positive multiple of {SIZE_MULTIPLE}")
    return width, height


def image_to_video_tensor(image: Image.Image, width: int, height: int) -> torch.Tensor:
    """LANCZOS cover-resize, centre crop, then [-1, 1]: [1, 3, 1, height, width] float32."""
    pixels = np.asarray(resize_center_crop(image, width, height), dtype=np.float32) / 255.0
    tensor = torch.from_numpy(pixels).permute(2, 0, 1)
    return (tensor * 2.0 - 1.0)[None, :, None]


def to_uint8_frames(video: torch.Tensor, truncate: bool = False) -> np.ndarray:
    """Decoder output [1, 3, F, H, W] in about [-1, 1] -> [F, H, W, 3] uint8.

    Pixels are rounded; `truncate` reproduces the official `(x·255).to(uint8)`, which biases every
    channel down by half a level on average.
    """
    scaled = ((video[0].float() / 2 + 0.5).clamp(0, 1) * 255).permute(1, 2, 3, 0)
    if not truncate:
        scaled = scaled.round()
    return scaled.to(torch.uint8).cpu().numpy()
