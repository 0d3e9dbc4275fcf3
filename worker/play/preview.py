"""The preview engine's chunk source: the input image reprojected along the cameras as they are played.

Each chunk's frames are `trajectories.render`'s, exactly as a preview job renders a trajectory: latent `i`
is frame `4·i` and the frames in between interpolate the poses (`frame_poses`). A chunk after the first
starts from the previous chunk's last latent, which this source keeps. No HUD is burned in: the player
draws its own. So a whole session runs on a CPU with no weights.

The stage the image is painted on grows with the walk (`SceneDepth.for_trajectory` over the latents played
so far): a preview job knows its whole path in advance, a live one only what was played.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from worker.play.source import ChunkFrames, SourceInfo

if TYPE_CHECKING:
    from worker.progress import Reporter
    from worldplay_cli.contract.play import PlaySpec


class PreviewSource:
    def __init__(self) -> None:
        self._image: np.ndarray | None = None
        self._size = (0, 0)
        self._renderer = None
        self._scene = None
        self._last: tuple[np.ndarray, np.ndarray] | None = None  # the last latent's c2w and intrinsics
        self._source_K: np.ndarray | None = None  # latent 0's: the camera that took the image

    def open(self, spec: PlaySpec, image_path: Path, work_dir: Path, reporter: Reporter) -> SourceInfo:
        from PIL import Image

        from trajectories.render import SceneDepth, fit_image

        started = time.monotonic()
        with Image.open(image_path) as image:
            self._image = fit_image(np.asarray(image.convert("RGB")), spec.width, spec.height)
        self._size = (spec.width, spec.height)
        self._scene = SceneDepth()
        return SourceInfo(load_s=round(time.monotonic() - started, 3), info={"renderer": "trajectories.render"})

    def generate(
        self, chunk: int, c2w: np.ndarray, intrinsics: np.ndarray, actions: np.ndarray, prompt: str
    ) -> ChunkFrames:
        from trajectories import Trajectory
        from trajectories.render import ViewRenderer, frame_intrinsics, frame_poses

        started = time.monotonic()
        if chunk > 0 and self._last is None:
            raise RuntimeError(f"chunk {chunk} asked for before chunk 0")
        if self._last is not None:
            # The frames between the previous chunk's last latent and this chunk's first are this chunk's.
            c2w = np.concatenate([self._last[0][None], c2w])
            intrinsics = np.concatenate([self._last[1][None], intrinsics])
        # Normalised intrinsics read as pixel ones whose principal point is (0.5, 0.5): normalising is a no-op.
        path = Trajectory(c2w, intrinsics)
        poses, frame_K = frame_poses(path), frame_intrinsics(path)
        if self._last is not None:
            poses, frame_K = poses[1:], frame_K[1:]
        else:
            self._source_K = frame_K[0]
        scene = self._scene.for_trajectory(c2w)
        if self._renderer is None or scene != self._scene:
            # Latent 0 is the identity: every pose is already relative to the camera that took the image.
            self._scene = scene
            self._renderer = ViewRenderer(self._image, self._source_K, self._size, scene)
        frames = np.stack([self._renderer.render(pose, K_norm) for pose, K_norm in zip(poses, frame_K)])
        self._last = (c2w[-1].copy(), intrinsics[-1].copy())
        return ChunkFrames(frames=frames, generate_s=round(time.monotonic() - started, 4))

    def close(self) -> None:
        self._renderer = None
        self._image = None
