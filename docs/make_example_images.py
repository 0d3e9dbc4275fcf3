"""Generate the bundled example images (worldplay_cli/assets/*.png) procedurally.

Run from the repository root: ``python docs/make_example_images.py``. The scenes are drawn through the
same pinhole camera the preview engine assumes (the official default K, ground 1 unit below the camera,
horizon at mid-height), so walking forward in a preview moves the ground texture the way it should.
Deterministic: the same seed gives byte-identical PNGs.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

WIDTH, HEIGHT = 832, 480
# Normalised focal lengths of the official default K (1920x1080, f = 969.70 px).
FOCAL_X = 969.6969696969696 / 1920 * WIDTH
FOCAL_Y = 969.6969696969696 / 1080 * HEIGHT
CAMERA_HEIGHT = 1.0
ASSETS = Path(__file__).resolve().parent.parent / "worldplay_cli" / "assets"


def _project(x: float, y: float, z: float) -> tuple[float, float]:
    return FOCAL_X * x / z + WIDTH / 2, FOCAL_Y * y / z + HEIGHT / 2


def _sky(top: tuple[int, int, int], horizon: tuple[int, int, int]) -> np.ndarray:
    fraction = np.linspace(0.0, 1.0, HEIGHT // 2 + 1)[:, None, None] ** 1.4
    band = (1 - fraction) * np.array(top) + fraction * np.array(horizon)
    sky = np.zeros((HEIGHT, WIDTH, 3))
    sky[: HEIGHT // 2 + 1] = band
    return sky


def _ground(
    rng: np.random.Generator, base: tuple[int, int, int], tile: float, fog: tuple[int, int, int]
) -> tuple[np.ndarray, np.ndarray]:
    """Ground plane texture below the horizon: tiles, grid lines and noise, with distance fog."""
    rows = np.arange(HEIGHT) + 0.5 - HEIGHT / 2
    columns = np.arange(WIDTH) + 0.5 - WIDTH / 2
    below = rows > 0.5
    # Rows above the horizon get a placeholder depth; they are masked out by the caller.
    depth = np.where(below, CAMERA_HEIGHT * FOCAL_Y / np.maximum(rows, 0.5), 1.0)[:, None]
    lateral = columns[None, :] / FOCAL_X * depth
    u, v = lateral / tile, np.broadcast_to(depth, lateral.shape) / tile
    checker = ((np.floor(u) + np.floor(v)) % 2)[..., None]
    # Grid lines with a width in world units, anti-aliased by their screen-space footprint.
    line_width = 0.04
    line = np.minimum(np.abs(u - np.round(u)), np.abs(v - np.round(v)))
    footprint = np.maximum(depth / FOCAL_Y / tile, 1e-3)
    grid = np.clip(1.0 - (line - line_width) / (2 * footprint), 0.0, 1.0)[..., None]
    noise = rng.normal(0.0, 1.0, (HEIGHT // 4, WIDTH // 4))
    noise = np.asarray(
        Image.fromarray(((noise * 20) + 128).clip(0, 255).astype(np.uint8)).resize(
            (WIDTH, HEIGHT), Image.Resampling.BICUBIC
        ),
        np.float64,
    )
    texture = np.array(base) * (0.85 + 0.15 * checker) + (noise[..., None] - 128) * 0.25
    texture = texture * (1 - 0.35 * grid)
    fog_amount = (1.0 - np.exp(-depth / 14.0))[..., None]
    texture = texture * (1 - fog_amount) + np.array(fog) * fog_amount
    return texture, np.broadcast_to(below[:, None], (HEIGHT, WIDTH))


def _mountains(
    image: Image.Image, rng: np.random.Generator, colour: tuple[int, int, int], height: float, roughness: float
) -> None:
    x = np.arange(WIDTH + 1)
    profile = np.zeros(WIDTH + 1)
    for octave in range(1, 6):
        phase = rng.uniform(0, 2 * math.pi)
        profile += np.sin(x / WIDTH * 2 * math.pi * octave * 1.3 + phase) / octave**roughness
    profile = HEIGHT / 2 - height * (0.55 + 0.45 * profile / np.abs(profile).max())
    ImageDraw.Draw(image).polygon(
        [(0, HEIGHT / 2 + 1)] + list(zip(x.tolist(), profile.tolist())) + [(WIDTH, HEIGHT / 2 + 1)], fill=colour
    )


def _box(
    pen: ImageDraw.ImageDraw,
    x: float,
    z: float,
    size: float,
    tall: float,
    front: tuple[int, int, int],
    side: tuple[int, int, int],
    roof: tuple[int, int, int],
) -> None:
    """An axis-aligned box standing on the ground, drawn with its visible faces."""
    left, right = x - size / 2, x + size / 2
    near, far = z, z + size
    bottom, top = CAMERA_HEIGHT, CAMERA_HEIGHT - tall
    faces = []
    if top > 0:  # roof visible only when lower than the camera, never in these scenes
        faces.append(([(left, top, near), (right, top, near), (right, top, far), (left, top, far)], roof))
    side_x = right if right < 0 else left if left > 0 else None
    if side_x is not None:
        faces.append(([(side_x, bottom, near), (side_x, top, near), (side_x, top, far), (side_x, bottom, far)], side))
    faces.append(([(left, bottom, near), (right, bottom, near), (right, top, near), (left, top, near)], front))
    for corners, colour in faces:
        pen.polygon([_project(*corner) for corner in corners], fill=colour, outline=tuple(c // 2 for c in colour))


def _tree(pen: ImageDraw.ImageDraw, x: float, z: float, tall: float, colour: tuple[int, int, int]) -> None:
    trunk_x, ground_y = _project(x, CAMERA_HEIGHT, z)
    _, crown_y = _project(x, CAMERA_HEIGHT - tall, z)
    half = FOCAL_X * tall * 0.28 / z
    trunk = max(1.0, half * 0.18)
    pen.rectangle((trunk_x - trunk, crown_y + (ground_y - crown_y) * 0.6, trunk_x + trunk, ground_y), fill=(90, 60, 35))
    pen.polygon(
        [
            (trunk_x, crown_y),
            (trunk_x - half, crown_y + (ground_y - crown_y) * 0.75),
            (trunk_x + half, crown_y + (ground_y - crown_y) * 0.75),
        ],
        fill=colour,
    )


def meadow(seed: int = 7) -> Image.Image:
    rng = np.random.default_rng(seed)
    ground, below = _ground(rng, (86, 140, 70), tile=0.5, fog=(200, 215, 225))
    canvas = np.where(below[..., None], ground, _sky((60, 110, 200), (200, 215, 225)))
    image = Image.fromarray(canvas.clip(0, 255).astype(np.uint8))
    pen = ImageDraw.Draw(image)
    pen.ellipse((600, 40, 660, 100), fill=(255, 240, 190))
    _mountains(image, rng, (120, 135, 165), height=95, roughness=1.2)
    _mountains(image, rng, (95, 120, 120), height=45, roughness=1.6)
    image = image.filter(ImageFilter.GaussianBlur(0.6))
    pen = ImageDraw.Draw(image)
    placed = [(x, z) for x, z in zip(rng.uniform(-9, 9, 40), rng.uniform(3.5, 16, 40)) if abs(x) > 0.9]
    objects = [("tree", x, z) for x, z in placed[:26]] + [
        ("box", -2.2, 4.0),
        ("box", 2.6, 6.5),
        ("box", -0.4, 9.0),
        ("box", 4.5, 11.0),
    ]
    palette = [
        ((200, 80, 60), (150, 55, 45), (220, 200, 180)),
        ((230, 190, 70), (170, 135, 45), (230, 220, 200)),
        ((70, 110, 200), (50, 80, 150), (200, 210, 230)),
        ((240, 240, 235), (180, 180, 175), (120, 60, 50)),
    ]
    for index, (kind, x, z) in enumerate(sorted(objects, key=lambda item: -item[2])):
        if kind == "tree":
            _tree(
                pen,
                x,
                z,
                tall=rng.uniform(1.4, 2.6),
                colour=(40 + int(rng.integers(0, 30)), 100 + int(rng.integers(0, 50)), 45),
            )
        else:
            front, side, roof = palette[index % len(palette)]
            _box(pen, x, z, size=1.0, tall=rng.uniform(0.8, 1.8), front=front, side=side, roof=roof)
    return image


def desert_city(seed: int = 11) -> Image.Image:
    rng = np.random.default_rng(seed)
    ground, below = _ground(rng, (196, 160, 110), tile=1.0, fog=(235, 205, 170))
    canvas = np.where(below[..., None], ground, _sky((235, 120, 80), (250, 210, 160)))
    image = Image.fromarray(canvas.clip(0, 255).astype(np.uint8))
    _mountains(image, rng, (170, 110, 95), height=60, roughness=1.0)
    pen = ImageDraw.Draw(image)
    towers = [(x, z) for x, z in zip(rng.uniform(-12, 12, 30), rng.uniform(4.5, 20, 30)) if abs(x) > 1.2]
    for x, z in sorted(towers, key=lambda item: -item[1]):
        shade = int(rng.integers(150, 230))
        _box(
            pen,
            x,
            z,
            size=rng.uniform(0.8, 1.6),
            tall=rng.uniform(1.5, 6.0),
            front=(shade, shade - 40, shade - 70),
            side=(shade - 50, shade - 80, shade - 100),
            roof=(90, 70, 60),
        )
    return image


def main() -> None:
    ASSETS.mkdir(parents=True, exist_ok=True)
    for name, scene in (("example.png", meadow), ("example_city.png", desert_city)):
        path = ASSETS / name
        scene().save(path, optimize=True)
        print(f"{path}: {path.stat().st_size // 1024} KB")


if __name__ == "__main__":
    main()
