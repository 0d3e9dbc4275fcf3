"""Synthetic training data: procedurally textured rooms filmed along random keyboard/mouse trajectories.

Every clip is a ray-cast box room (floor, ceiling, four walls) whose faces carry a seeded texture (value
noise in a few octaves, coloured discs and a grid), seen through a pinhole camera that walks and looks
around inside it. The camera moves the way the pose-string grammar moves it (per frame: yaw, then pitch
about the camera's own axes, then forward/right along them), driven by held keys and mouse deltas:

- keyboard `[F, 4]` in the vocabulary order W, S, A, D, one row per video frame;
- mouse `[F, 2]` as (pitch, yaw) in degrees per frame (pitch positive = look up);
- row f is the motion from frame f-1 to frame f (row 0 repeats row 1, like the HUD), and actions are held
  for whole latents (4 frames), so the per-latent labels read at frame 4i are exact.

With `view="third"` the camera follows an avatar (a shaded ball `orbit_distance` ahead of it): the keys
move both, the mouse orbits the camera about the ball (`trajectories.keys`, third person), and the
dataset's vocabulary says `view: third`, so its labels follow the official tps rule.

The generator writes the raw dataset format `worldplay data prepare` reads (mp4 + actions JSON + per-frame
poses in the official training JSON + `dataset.json`), so the whole path from footage to training runs on a
CPU, and action-following can be measured against known motion. numpy only.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from trajectories.geometry import rot_y
from worker.training.controls import CANONICAL_KEYS as KEYS
from worker.training.controls import FRAMES_PER_LATENT, integrate_controls

# Room half-extent (x, z), camera height above the floor and the ceiling height above the camera.
ROOM_HALF = 4.0
FLOOR_Y = 1.0
CEILING_Y = -2.0
# The camera stays this far from the walls.
WALL_MARGIN = 1.0
TEXTURE_SIZE = 128
# World units covered by one repetition of a face texture.
TEXTURE_PERIOD = 2.0
MAX_PITCH_DEG = 20.0

# Scripted motions for validation clips: each holds for whole latents, so the action-following score
# sees every key and look direction in isolation.
VALIDATION_PATTERNS: tuple[tuple[tuple[tuple[str, ...], int], ...], ...] = (
    ((("W",), 1),),
    ((("S",), 1),),
    ((("A",), 1),),
    ((("D",), 1),),
    ((("right",), 1),),
    ((("left",), 1),),
    ((("up",), 3), (("down",), 3)),
    ((("W", "right"), 2), (("W", "left"), 2)),
    ((("D",), 2), (("A",), 2)),
)
COLOUR_NAMES = {
    "red": (200, 60, 50),
    "orange": (220, 140, 40),
    "yellow": (220, 200, 60),
    "green": (60, 170, 80),
    "teal": (40, 160, 160),
    "blue": (50, 90, 200),
    "purple": (130, 70, 180),
    "grey": (140, 140, 140),
}


@dataclass(frozen=True)
class SynthOptions:
    width: int = 64
    height: int = 64
    fps: int = 16
    num_latents: int = 24
    fov_deg: float = 90.0
    move_step: float = 0.04  # world units per frame while a translation key is held
    turn_step_deg: float = 1.5  # degrees per frame while the mouse is moved
    supersample: int = 2
    texture_period: float = TEXTURE_PERIOD  # world units per texture repeat: larger = smoother frames
    view: str = "first"  # "third": the camera follows an avatar ball
    orbit_distance: float = 0.5  # third person: the ball's distance ahead of the camera (the vocabulary default)

    @property
    def num_frames(self) -> int:
        return FRAMES_PER_LATENT * (self.num_latents - 1) + 1

    def pixel_intrinsics(self) -> np.ndarray:
        focal = 0.5 * self.width / math.tan(math.radians(self.fov_deg) / 2.0)
        return np.array([[focal, 0.0, self.width / 2.0], [0.0, focal, self.height / 2.0], [0.0, 0.0, 1.0]])


# ---------------------------------------------------------------------------------------------------
# Scenes


def value_noise(rng: np.random.Generator, size: int, cells: int) -> np.ndarray:
    """Smooth periodic noise [size, size] in [0, 1]: a random grid of `cells`² values, bilinearly upsampled."""
    grid = rng.random((cells, cells))
    coords = np.arange(size) * cells / size
    low = np.floor(coords).astype(int)
    frac = coords - low
    high = (low + 1) % cells
    rows = grid[low] * (1 - frac)[:, None] + grid[high] * frac[:, None]
    return rows[:, low] * (1 - frac)[None] + rows[:, high] * frac[None]


def face_texture(rng: np.random.Generator, base: np.ndarray, size: int = TEXTURE_SIZE) -> np.ndarray:
    """One face's texture [size, size, 3] float32 0..255: noise octaves tinting `base`, discs and a grid."""
    shade = sum(value_noise(rng, size, cells) * weight for cells, weight in ((4, 0.5), (8, 0.3), (16, 0.2)))
    tint = rng.uniform(0.6, 1.4, size=3)
    texture = base[None, None] * (0.45 + 0.9 * shade[..., None]) * tint[None, None] * 0.8
    rows, cols = np.mgrid[0:size, 0:size]
    for _ in range(rng.integers(3, 7)):
        centre = rng.uniform(0, size, size=2)
        radius = rng.uniform(size * 0.05, size * 0.15)
        # distances on the torus, so discs wrap like the texture does
        dy = np.minimum(np.abs(rows - centre[0]), size - np.abs(rows - centre[0]))
        dx = np.minimum(np.abs(cols - centre[1]), size - np.abs(cols - centre[1]))
        texture[dy**2 + dx**2 < radius**2] = rng.uniform(20, 235, size=3)
    line = max(1, size // 32)
    texture[:line] *= 0.25
    texture[:, :line] *= 0.25
    return np.clip(texture, 0, 255).astype(np.float32)


@dataclass(frozen=True)
class Room:
    """Six face textures, indexed -x, +x, -y (ceiling), +y (floor), -z, +z; plus the colour it is named after."""

    textures: tuple[np.ndarray, ...]
    colour: str

    @classmethod
    def random(cls, rng: np.random.Generator) -> Room:
        colour = str(rng.choice(sorted(COLOUR_NAMES)))
        base = np.array(COLOUR_NAMES[colour], dtype=np.float32)
        textures = []
        for face in range(6):
            # floor and ceiling get a neutral base so walls stay the dominant colour
            face_base = base if face not in (2, 3) else np.array([150.0, 140.0, 130.0]) * rng.uniform(0.6, 1.2)
            textures.append(face_texture(rng, face_base))
        return cls(tuple(textures), colour)

    def render(
        self,
        c2w: np.ndarray,
        intrinsics: np.ndarray,
        width: int,
        height: int,
        supersample: int = 2,
        texture_period: float = TEXTURE_PERIOD,
        avatar: np.ndarray | None = None,
    ) -> np.ndarray:
        """The view from camera-to-world `c2w` (OpenCV axes) with pixel `intrinsics`, HxWx3 uint8; with
        `avatar` (a world point) a shaded ball of radius AVATAR_RADIUS stands there."""
        # 1. rays through supersampled pixel centres, in world space
        scale = supersample
        cols, rows = np.meshgrid((np.arange(width * scale) + 0.5) / scale, (np.arange(height * scale) + 0.5) / scale)
        pixels = np.stack([cols.ravel(), rows.ravel(), np.ones(cols.size)])
        directions = c2w[:3, :3] @ (np.linalg.inv(intrinsics) @ pixels)
        origin = c2w[:3, 3]
        # 2. from inside a box every ray leaves through exactly one face: the nearest positive slab exit
        bounds_low = np.array([-ROOM_HALF, CEILING_Y, -ROOM_HALF])
        bounds_high = np.array([ROOM_HALF, FLOOR_Y, ROOM_HALF])
        with np.errstate(divide="ignore", invalid="ignore"):
            exit_low = (bounds_low[:, None] - origin[:, None]) / directions
            exit_high = (bounds_high[:, None] - origin[:, None]) / directions
        exits = np.where(directions > 0, exit_high, exit_low)
        exits = np.where(np.isfinite(exits) & (exits > 0), exits, np.inf)
        axis = np.argmin(exits, axis=0)
        distance = exits[axis, np.arange(exits.shape[1])]
        hit = origin[:, None] + directions * distance
        face = 2 * axis + (directions[axis, np.arange(exits.shape[1])] > 0)
        # 3. texture coordinates: the two world coordinates spanning the face
        tangent_u = np.choose(axis, [hit[2], hit[0], hit[0]])
        tangent_v = np.choose(axis, [hit[1], hit[2], hit[1]])
        colour = np.zeros((hit.shape[1], 3), dtype=np.float32)
        for index in range(6):
            selected = face == index
            if selected.any():
                colour[selected] = sample_wrapped(
                    self.textures[index], tangent_u[selected], tangent_v[selected], texture_period
                )
        if avatar is not None:
            distance = _draw_avatar(colour, origin, directions, distance, avatar)
        # 4. a little distance fog gives depth cues and hides aliasing far away
        fog = np.exp(-distance / 12.0)[:, None].astype(np.float32)
        colour = colour * fog + 90.0 * (1 - fog)
        image = colour.reshape(height * scale, width * scale, 3)
        image = image.reshape(height, scale, width, scale, 3).mean(axis=(1, 3))
        return np.clip(image + 0.5, 0, 255).astype(np.uint8)


AVATAR_RADIUS = 0.2
AVATAR_COLOUR = np.array([235.0, 235.0, 245.0], dtype=np.float32)
# light from above and behind the camera's usual heading, so the ball reads as round
LIGHT = np.array([0.3, -0.8, -0.5]) / np.linalg.norm([0.3, -0.8, -0.5])


def _draw_avatar(
    colour: np.ndarray, origin: np.ndarray, directions: np.ndarray, distance: np.ndarray, centre: np.ndarray
) -> np.ndarray:
    """Paint the ball where it is nearer than the room (in place); returns the per-ray hit distance."""
    offset = origin - centre
    a = np.einsum("ij,ij->j", directions, directions)
    b = 2.0 * directions.T @ offset
    c = offset @ offset - AVATAR_RADIUS**2
    disc = b * b - 4 * a * c
    with np.errstate(invalid="ignore"):
        near = (-b - np.sqrt(disc)) / (2 * a)
    hit = (disc > 0) & (near > 0) & (near < distance)
    if hit.any():
        normals = (origin[:, None] + directions[:, hit] * near[hit] - centre[:, None]) / AVATAR_RADIUS
        shade = 0.35 + 0.65 * np.clip(LIGHT @ -normals, 0.0, 1.0)
        colour[hit] = AVATAR_COLOUR[None] * shade[:, None].astype(np.float32)
    return np.where(hit, near, distance)


def sample_wrapped(texture: np.ndarray, u: np.ndarray, v: np.ndarray, period: float = TEXTURE_PERIOD) -> np.ndarray:
    """Bilinear lookup of a periodic texture (one repeat per `period` world units) at (u, v); returns [N, 3]."""
    size = texture.shape[0]
    x = (u / period % 1.0) * size
    y = (v / period % 1.0) * size
    x0, y0 = np.floor(x).astype(int) % size, np.floor(y).astype(int) % size
    x1, y1 = (x0 + 1) % size, (y0 + 1) % size
    wx, wy = (x - np.floor(x))[:, None], (y - np.floor(y))[:, None]
    top = texture[y0, x0] * (1 - wx) + texture[y0, x1] * wx
    bottom = texture[y1, x0] * (1 - wx) + texture[y1, x1] * wx
    return top * (1 - wy) + bottom * wy


# ---------------------------------------------------------------------------------------------------
# Trajectories


def controls_for_segments(segments: list[tuple[tuple[str, ...], int]], num_latents: int, options: SynthOptions):
    """Per-frame keyboard [F, 4] and mouse [F, 2] (pitch, yaw deg/frame) from (held actions, latents) pairs."""
    keyboard = np.zeros((options.num_frames, len(KEYS)), dtype=np.float32)
    mouse = np.zeros((options.num_frames, 2), dtype=np.float32)
    latent = 1
    for held, latents in segments:
        for _ in range(latents):
            if latent >= num_latents:
                break
            frames = slice(FRAMES_PER_LATENT * (latent - 1) + 1, FRAMES_PER_LATENT * latent + 1)
            for key in held:
                if key in KEYS:
                    keyboard[frames, KEYS.index(key)] = 1.0
            look = {"up": (1, 0), "down": (-1, 0), "right": (0, 1), "left": (0, -1)}
            for key in held:
                if key in look:
                    mouse[frames] += np.array(look[key], dtype=np.float32) * options.turn_step_deg
            latent += 1
    keyboard[0], mouse[0] = keyboard[min(1, len(keyboard) - 1)], mouse[min(1, len(mouse) - 1)]
    return keyboard, mouse


def random_segments(rng: np.random.Generator, num_latents: int) -> list[tuple[tuple[str, ...], int]]:
    """Held actions for latents 1..N-1: a translation (or none) and a look direction (or none), 1-3 latents each."""
    segments, covered = [], 1
    while covered < num_latents:
        move = [(), ("W",), ("W",), ("S",), ("A",), ("D",), ("W", "D"), ("W", "A")][rng.integers(0, 8)]
        look = [(), (), ("right",), ("left",), ("up",), ("down",)][rng.integers(0, 6)]
        length = int(rng.integers(1, 4))
        segments.append((move + look, length))
        covered += length
    return segments


def safe_segments(segments, options: SynthOptions, start: np.ndarray):
    """Drop translations that would leave the room's safe area and looks that would pitch too far."""
    fixed = []
    pose = start
    for held, latents in segments:
        for candidate in (held, tuple(key for key in held if key not in KEYS), ()):
            keyboard, mouse = controls_for_segments(
                [(candidate, latents)], latents + 1, options_for(options, latents + 1)
            )
            path = camera_path(keyboard, mouse, options, pose)
            inside = np.all(np.abs(path[:, [0, 2], 3]) < ROOM_HALF - WALL_MARGIN) and np.all(
                np.abs(avatar_positions(path, options)[:, [0, 2]]) < ROOM_HALF - WALL_MARGIN
            )
            pitch = np.degrees(np.arcsin(np.clip(-path[:, 1, 2], -1, 1)))
            if inside and np.all(np.abs(pitch) < MAX_PITCH_DEG):
                fixed.append((candidate, latents))
                pose = path[-1]
                break
    return fixed


def camera_path(keyboard: np.ndarray, mouse: np.ndarray, options: SynthOptions, start: np.ndarray) -> np.ndarray:
    """Camera-to-world per frame for the controls, in the options' view."""
    return integrate_controls(keyboard, mouse, options.move_step, start, options.view, options.orbit_distance)


def avatar_positions(c2w: np.ndarray, options: SynthOptions) -> np.ndarray:
    """World positions [F, 3] of the third-person avatar (the orbit pivot), or the camera's own (first person)."""
    ahead = options.orbit_distance if options.view == "third" else 0.0
    return c2w[:, :3, 3] + c2w[:, :3, 2] * ahead


def options_for(options: SynthOptions, num_latents: int) -> SynthOptions:
    return SynthOptions(**{**options.__dict__, "num_latents": num_latents})


def start_pose(rng: np.random.Generator) -> np.ndarray:
    pose = np.eye(4)
    pose[:3, :3] = rot_y(rng.uniform(-math.pi, math.pi))
    pose[[0, 2], 3] = rng.uniform(-1.5, 1.5, size=2)
    return pose


def pattern_segments(pattern, options: SynthOptions) -> list[tuple[tuple[str, ...], int]]:
    """A scripted pattern repeated from latent 1 to the end of the clip."""
    return [pattern[index % len(pattern)] for index in range(options.num_latents - 1)]


def scripted_start(segments, options: SynthOptions, start: np.ndarray) -> np.ndarray:
    """The start position that centres a scripted walk on the room; BadInput when the walk cannot fit.

    A scripted clip exists to show its actions, so it is never trimmed the way a random walk is (a walk
    trimmed to nothing would score a model on a still camera)."""
    from worldplay_cli.contract.errors import BadInput

    centred = start.copy()
    centred[:3, 3] = 0.0
    keyboard, mouse = controls_for_segments(segments, options.num_latents, options)
    path = camera_path(keyboard, mouse, options, centred)
    offset = -path[:, :3, 3].mean(axis=0)
    # distance from the room's centre: the same for every start heading, so one check covers all clips
    extent = float(np.linalg.norm(path[:, [0, 2], 3] + offset[[0, 2]], axis=1).max())
    pitch = np.degrees(np.arcsin(np.clip(-path[:, 1, 2], -1, 1)))
    if extent >= ROOM_HALF - WALL_MARGIN or np.any(np.abs(pitch) >= MAX_PITCH_DEG):
        raise BadInput(
            f"a scripted validation walk of {options.num_latents} latents at {options.move_step} units and "
            f"{options.turn_step_deg}° per frame leaves the room (it reaches {extent:.1f} units from the centre, "
            f"the limit is {ROOM_HALF - WALL_MARGIN:.1f}) or pitches past {MAX_PITCH_DEG:.0f}°",
            "use fewer --latents, or a smaller --move-step / --turn-deg",
        )
    return offset


@dataclass(frozen=True)
class SyntheticClip:
    frames: np.ndarray  # [F, H, W, 3] uint8
    keyboard: np.ndarray  # [F, 4] W, S, A, D
    mouse: np.ndarray  # [F, 2] pitch, yaw (deg/frame)
    c2w: np.ndarray  # [F, 4, 4]
    intrinsics: np.ndarray  # [3, 3] pixels
    prompt: str


def make_clip(seed: int, options: SynthOptions, pattern=None) -> SyntheticClip:
    """One clip: a random room, a random (or, with `pattern`, a scripted) walk through it."""
    rng = np.random.default_rng(seed)
    room = Room.random(rng)
    start = start_pose(rng)
    if pattern is None:
        segments = safe_segments(random_segments(rng, options.num_latents), options, start)
    else:
        segments = pattern_segments(pattern, options)
        start[:3, 3] = scripted_start(segments, options, start)
    keyboard, mouse = controls_for_segments(segments, options.num_latents, options)
    c2w = camera_path(keyboard, mouse, options, start)
    intrinsics = options.pixel_intrinsics()
    third = options.view == "third"
    avatars = avatar_positions(c2w, options)
    frames = np.stack(
        [
            room.render(
                pose,
                intrinsics,
                options.width,
                options.height,
                options.supersample,
                options.texture_period,
                avatar if third else None,
            )
            for pose, avatar in zip(c2w, avatars)
        ]
    )
    if third:
        prompt = f"A third-person view following a white ball through a synthetic room with {room.colour} walls."
    else:
        prompt = f"A first-person walk through a synthetic room with {room.colour} patterned walls."
    return SyntheticClip(frames, keyboard, mouse, c2w, intrinsics, prompt)


def official_pose_json(c2w: np.ndarray, intrinsics: np.ndarray) -> dict:
    """Per-frame poses in the official training format: {"<frame>": {"w2c": 4x4, "intrinsic": 3x3}}."""
    w2c = np.linalg.inv(c2w)
    return {str(index): {"w2c": matrix.tolist(), "intrinsic": intrinsics.tolist()} for index, matrix in enumerate(w2c)}


def write_synthetic_dataset(
    out_dir: str | Path,
    num_clips: int,
    num_validation: int = 0,
    options: SynthOptions = SynthOptions(),
    seed: int = 0,
    progress=None,
    scripted_training: bool = False,
) -> Path:
    """Write `num_clips` training clips (random walks, or with `scripted_training` the validation patterns
    in other rooms) and `num_validation` scripted clips plus `dataset.json`; returns its path."""
    from worker.video import write_video

    out_dir = Path(out_dir)
    entries = []
    jobs = [
        (
            f"train-{index:05d}",
            seed * 1_000_003 + index,
            VALIDATION_PATTERNS[index % len(VALIDATION_PATTERNS)] if scripted_training else None,
            "train",
        )
        for index in range(num_clips)
    ]
    jobs += [
        (
            f"val-{index:03d}",
            seed * 1_000_003 + 900_000 + index,
            VALIDATION_PATTERNS[index % len(VALIDATION_PATTERNS)],
            "validation",
        )
        for index in range(num_validation)
    ]
    # fail before rendering anything when a scripted walk cannot fit the room
    for pattern in {pattern for _, _, pattern, _ in jobs if pattern is not None}:
        scripted_start(pattern_segments(pattern, options), options, np.eye(4))
    (out_dir / "clips").mkdir(parents=True, exist_ok=True)
    for position, (clip_id, clip_seed, pattern, split) in enumerate(jobs):
        clip = make_clip(clip_seed, options, pattern)
        write_video(clip.frames, out_dir / "clips" / f"{clip_id}.mp4", options.fps, overwrite=True)
        actions = {"keyboard": clip.keyboard.tolist(), "mouse": clip.mouse.tolist()}
        (out_dir / "clips" / f"{clip_id}.actions.json").write_text(json.dumps(actions))
        (out_dir / "clips" / f"{clip_id}.poses.json").write_text(
            json.dumps(official_pose_json(clip.c2w, clip.intrinsics))
        )
        entries.append(
            {
                "id": clip_id,
                "video": f"clips/{clip_id}.mp4",
                "prompt": clip.prompt,
                "actions": f"clips/{clip_id}.actions.json",
                "poses": f"clips/{clip_id}.poses.json",
                "split": split,
            }
        )
        if progress is not None:
            progress(position + 1, len(jobs), clip_id)
    manifest = {
        "version": 1,
        "fps": options.fps,
        "vocabulary": {
            "keys": list(KEYS),
            "mouse": ["pitch", "yaw"],
            "pitch_sign": 1,
            "degrees_per_unit": 1.0,
            "translation_step": options.move_step,
            "view": options.view,
            "orbit_distance": options.orbit_distance,
        },
        "clips": entries,
    }
    path = out_dir / "dataset.json"
    path.write_text(json.dumps(manifest, indent=2) + "\n")
    return path
