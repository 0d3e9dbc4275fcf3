"""Preview renderer speed: our vectorised numpy remap vs a naive per-pixel PIL baseline, side by side.

    python bench/preview_render.py [--width 480 --height 272 --frames 48 --baseline-frames 2]

Both render the same trajectory with the same geometry (rotation homography, ground plane + backdrop,
edge clamp) at the same size; the baseline walks the pixels in Python and samples through PIL's pixel
access object, which is what a straightforward implementation looks like. A third line shows PIL's C
``Image.transform(PERSPECTIVE)`` (rotation only: no depth, no edge fill) as a ceiling for reference.
Frames/s are CPU seconds of this process (one core), so other load on the machine matters less.
"""

from __future__ import annotations

import argparse
import time

import numpy as np
from PIL import Image

from trajectories import resolve
from trajectories.render import SceneDepth, ViewRenderer, fit_image, frame_intrinsics, frame_poses, preview_frames
from worldplay_cli.assets import EXAMPLE_IMAGE

TRAJECTORY = "w-8, right-8, d-4, up-4"


def naive_frame(image: Image.Image, c2w_rel: np.ndarray, K: np.ndarray, scene: SceneDepth) -> np.ndarray:
    """The same re-projection as ours, one pixel at a time in Python (bilinear, clamped at the edges)."""
    width, height = image.size
    pixels = image.load()
    rotation, origin = c2w_rel[:3, :3].tolist(), c2w_rel[:3, 3].tolist()
    fx, fy, cx, cy = K[0, 0], K[1, 1], K[0, 2], K[1, 2]
    out = np.empty((height, width, 3), np.uint8)
    for row in range(height):
        for column in range(width):
            camera = ((column + 0.5 - cx) / fx, (row + 0.5 - cy) / fy, 1.0)
            ray = [sum(rotation[i][j] * camera[j] for j in range(3)) for i in range(3)]
            hits = [
                (plane - origin[axis]) / ray[axis]
                for axis, plane in ((1, scene.camera_height), (2, scene.far_depth))
                if ray[axis] != 0 and (plane - origin[axis]) / ray[axis] > 1e-6
            ]
            distance = min(hits) if hits else 1.0
            depth = max(origin[2] + distance * ray[2], 1e-6)
            x = min(max(fx * (origin[0] + distance * ray[0]) / depth + cx - 0.5, 0.0), width - 1.0)
            y = min(max(fy * (origin[1] + distance * ray[1]) / depth + cy - 0.5, 0.0), height - 1.0)
            x0, y0 = min(int(x), width - 2), min(int(y), height - 2)
            wx, wy = x - x0, y - y0
            corners = (pixels[x0, y0], pixels[x0 + 1, y0], pixels[x0, y0 + 1], pixels[x0 + 1, y0 + 1])
            weights = ((1 - wx) * (1 - wy), wx * (1 - wy), (1 - wx) * wy, wx * wy)
            out[row, column] = [int(sum(c[k] * w for c, w in zip(corners, weights)) + 0.5) for k in range(3)]
    return out


def perspective_frame(image: Image.Image, c2w_rel: np.ndarray, K: np.ndarray) -> Image.Image:
    homography = K @ c2w_rel[:3, :3] @ np.linalg.inv(K)  # output pixel -> source pixel
    homography = homography / homography[2, 2]
    return image.transform(
        image.size, Image.Transform.PERSPECTIVE, tuple(homography.ravel()[:8]), Image.Resampling.BILINEAR
    )


def frames_per_second(render, count: int) -> float:
    start = time.process_time()
    for index in range(count):
        render(index)
    return count / max(time.process_time() - start, 1e-9)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--width", type=int, default=480)
    parser.add_argument("--height", type=int, default=272)
    parser.add_argument("--frames", type=int, default=48)
    parser.add_argument("--baseline-frames", type=int, default=2)
    args = parser.parse_args()

    trajectory = resolve(TRAJECTORY)
    poses = frame_poses(trajectory)
    relative = np.linalg.inv(poses[0]) @ poses
    K_norm = frame_intrinsics(trajectory)[0]
    scene = SceneDepth().for_trajectory(relative)
    image = fit_image(np.asarray(Image.open(EXAMPLE_IMAGE).convert("RGB")), args.width, args.height)
    K = np.diag([args.width, args.height, 1.0]) @ K_norm
    source = Image.fromarray(image)

    renderer = ViewRenderer(image, K_norm, (args.width, args.height), scene)
    pick = lambda index: relative[(index * 7 + 5) % len(relative)]  # noqa: E731 (spread over the path)
    ours = frames_per_second(lambda index: renderer.render(pick(index), K_norm), args.frames)
    naive = frames_per_second(lambda index: naive_frame(source, pick(index), K, scene), args.baseline_frames)
    start = time.process_time()
    full = len(list(preview_frames(image, trajectory, args.width, args.height, hud=True))) / (
        time.process_time() - start
    )
    pil = frames_per_second(lambda index: perspective_frame(source, pick(index), K), args.frames)

    # The two must agree (up to the edge fade, which the baseline skips) before their speeds mean anything.
    difference = np.abs(renderer.render(pick(1), K_norm).astype(int) - naive_frame(source, pick(1), K, scene)).mean()
    print(
        f"preview render {args.width}x{args.height}, trajectory {TRAJECTORY!r} ({len(relative)} frames), CPU time of one core"
    )
    print(f"  ours (numpy remap, depth + edge fill)     {ours:8.1f} frames/s")
    print(f"  ours, whole preview_frames with HUD       {full:8.1f} frames/s")
    print(f"  naive per-pixel PIL (same geometry)       {naive:8.2f} frames/s   ours/naive = {ours / naive:7.0f}x")
    print(f"  PIL PERSPECTIVE in C (rotation only)      {pil:8.1f} frames/s   ours/PIL-C = {ours / pil:7.2f}x")
    print(f"  mean |ours - naive| on a sample frame     {difference:8.2f} (levels of 255; edge fade differs)")
    print(f"  target >= 20 frames/s for the whole preview: {'met' if full >= 20 else 'NOT met'}")


if __name__ == "__main__":
    main()
