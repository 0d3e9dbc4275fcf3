"""Reading training clips (frames and frame rate in one decode) via imageio-ffmpeg; writing is `worker.video`."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np


@dataclass(frozen=True)
class VideoClip:
    frames: np.ndarray  # [F, H, W, 3] uint8
    fps: float


def read_video(path: str | Path) -> VideoClip:
    """Decode every frame of `path` as RGB uint8; raises OSError/RuntimeError on unreadable files."""
    import imageio_ffmpeg

    reader = imageio_ffmpeg.read_frames(str(path))
    meta = next(reader)
    width, height = meta["size"]
    frames = [np.frombuffer(frame, dtype=np.uint8).reshape(height, width, 3) for frame in reader]
    if not frames:
        raise RuntimeError(f"{path} holds no video frames")
    return VideoClip(np.stack(frames), float(meta.get("fps") or 0.0))


def video_size(path: str | Path) -> tuple[int, int]:
    """(width, height) from the container header, without decoding frames."""
    import imageio_ffmpeg

    reader = imageio_ffmpeg.read_frames(str(path))
    try:
        return tuple(next(reader)["size"])
    finally:
        reader.close()
