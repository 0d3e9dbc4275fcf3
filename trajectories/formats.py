"""Reading and writing trajectory files, with every convention change spelled out.

Formats (`FORMATS`):
- `official`   {"0": {"extrinsic": c2w, "K": K}, ...}; OpenCV camera axes, camera-to-world, pixel K.
- `nerfstudio` nerfstudio's camera-path JSON: row-major 4x4 `camera_to_world` in OpenGL camera axes
               (+x right, +y up, looking down -z), vertical `fov` in degrees, render size.
- `csv`/`json` plain per-latent rows: position x y z, yaw pitch roll in degrees, fx fy cx cy in pixels.
               World axes are those of the trajectory (for pose strings: the first camera's OpenCV axes).
- `matrices[:AXES[:KIND]]` a bare JSON list of 4x4 matrices; AXES `opencv` (default) or `opengl`
               (also Blender), KIND `c2w` (default, camera-to-world) or `w2c` (world-to-camera).
- `keys[:LAYOUT[:VIEW]]` a game key log, per-frame keyboard vectors and mouse deltas (`trajectories.keys`):
               LAYOUT `matrixgame2` or `zelda` (default: the file's, else from the keyboard's width),
               VIEW `first` (default) or `third`.
"""

from __future__ import annotations

import csv
import io
import json
import math
from pathlib import Path

import numpy as np

from trajectories.errors import TrajectoryError
from trajectories.geometry import flip_camera_axes, rotation_from_ypr
from trajectories.limits import check_latents
from trajectories.model import DEFAULT_K, Trajectory
from trajectories.official import FORMAT_HINT, dump_official, official_arrays, parse_json_text, read_json, read_text

FORMATS = ("official", "nerfstudio", "csv", "json", "matrices", "keys")
AXES = ("opencv", "opengl")
KINDS = ("c2w", "w2c")
PLAIN_COLUMNS = ("latent", "x", "y", "z", "yaw", "pitch", "roll", "fx", "fy", "cx", "cy")
PLAIN_FORMAT_TAG = "worldplay-poses"
# One nerfstudio camera per latent; a latent spans 4 frames of 24 fps video.
NERFSTUDIO_FPS = 6.0


def parse_format(spec: str) -> tuple[str, str, str]:
    """(format, axes, kind) from "official", "matrices:opengl:w2c", ... ; axes/kind only apply to matrices."""
    name, *options = spec.strip().lower().split(":")
    if name not in FORMATS:
        raise TrajectoryError(f"unknown trajectory format {spec!r}", f"use one of: {', '.join(FORMATS)}")
    if name == "keys":
        key_settings(spec)
        return name, "", ""
    if options and name != "matrices":
        raise TrajectoryError(f"format {name!r} takes no options ({spec!r})", "only matrices:AXES:KIND has options")
    if len(options) > 2:
        raise TrajectoryError(f"too many options in {spec!r}", "write matrices:AXES:KIND, e.g. matrices:opengl:c2w")
    axes = options[0] if options else "opencv"
    kind = options[1] if len(options) > 1 else "c2w"
    if axes not in AXES:
        raise TrajectoryError(f"unknown camera axes {axes!r} in {spec!r}", f"use one of: {', '.join(AXES)}")
    if kind not in KINDS:
        raise TrajectoryError(f"unknown matrix kind {kind!r} in {spec!r}", f"use one of: {', '.join(KINDS)}")
    return name, axes, kind


def key_settings(spec: str, base=None) -> tuple[object, frozenset[str]]:
    """(`KeySettings`, the fields the spec names) of `keys[:LAYOUT[:VIEW]]`."""
    from dataclasses import replace

    from trajectories.keys import LAYOUTS, VIEWS, KeySettings

    _, *options = spec.strip().lower().split(":")
    if len(options) > 2:
        raise TrajectoryError(f"too many options in {spec!r}", "write keys:LAYOUT:VIEW, e.g. keys:zelda:third")
    named = {field: option for field, option in zip(("layout", "view"), options) if option}
    if named.get("layout") not in (None, *LAYOUTS):
        raise TrajectoryError(f"unknown key layout {named['layout']!r}", f"use one of: {', '.join(LAYOUTS)}")
    if named.get("view") not in (None, *VIEWS):
        raise TrajectoryError(f"unknown view {named['view']!r}", f"use one of: {', '.join(VIEWS)}")
    return replace(base or KeySettings(), **named), frozenset(named)


def detect_format(path: Path, data=None) -> str:
    """Guess a file's format from its extension and, for JSON, its top-level shape."""
    if path.suffix.lower() == ".csv":
        return "csv"
    if data is None:
        return "official"
    if isinstance(data, list):
        return "matrices"
    if isinstance(data, dict):
        if "camera_path" in data:
            return "nerfstudio"
        if data.get("format") == PLAIN_FORMAT_TAG:
            return "json"
        if data.get("format") == "worldplay-keys":
            return "keys"
    return "official"


def load(path: Path, format: str | None = None) -> Trajectory:  # noqa: A002
    path = Path(path)
    if format is not None:
        name, axes, kind = parse_format(format)
    else:
        name, axes, kind = None, "opencv", "c2w"
    if name == "csv" or (name is None and path.suffix.lower() == ".csv"):
        return _from_rows(_read_csv(path), str(path))
    if name == "keys" or (name is None and path.suffix.lower() == ".npy"):
        from trajectories import keys

        return keys.to_trajectory(keys.read(path, *key_settings(format or "keys")))
    data = read_json(path)
    name = name or detect_format(path, data)
    if name == "official":
        c2w, K = official_arrays(data)
        return Trajectory(c2w, K)
    if name == "nerfstudio":
        return from_nerfstudio(data)
    if name == "json":
        return from_plain_json(data)
    if name == "matrices":
        return from_matrices(data, axes, kind)
    if name == "keys":
        from trajectories import keys

        return keys.to_trajectory(keys.read(path))
    raise TrajectoryError(f"cannot read {path} as {name}")


def dumps(trajectory: Trajectory, format: str = "official") -> str:  # noqa: A002
    name, axes, kind = parse_format(format)
    if name == "official":
        return dump_official(trajectory.to_official_json())
    if name == "nerfstudio":
        return json.dumps(to_nerfstudio(trajectory), indent=2) + "\n"
    if name == "json":
        return json.dumps(to_plain_json(trajectory), indent=2) + "\n"
    if name == "matrices":
        return json.dumps(to_matrices(trajectory, axes, kind), indent=2) + "\n"
    if name == "keys":
        from trajectories import keys

        return json.dumps(keys.to_json(keys.to_keys(trajectory, key_settings(format)[0]))) + "\n"
    return _write_csv(plain_rows(trajectory))


def save(trajectory: Trajectory, path: Path, format: str | None = None) -> None:  # noqa: A002
    path = Path(path)
    if format is not None and parse_format(format)[0] == "keys":
        from trajectories import keys

        keys.write(keys.to_keys(trajectory, key_settings(format)[0]), path)
        return
    text = dumps(trajectory, format or ("csv" if path.suffix.lower() == ".csv" else "official"))
    try:
        path.write_text(text, encoding="utf-8")
    except OSError as exc:
        raise TrajectoryError(f"cannot write {path}: {exc.strerror or exc}", "choose a writable file path") from None


# nerfstudio ----------------------------------------------------------------------------------


def to_nerfstudio(trajectory: Trajectory) -> dict:
    """nerfstudio camera path: one camera per latent, OpenGL axes, vertical FOV from fy and image height."""
    K = trajectory.K
    width, height = float(2 * K[0, 0, 2]), float(2 * K[0, 1, 2])
    cameras = []
    for c2w, k in zip(flip_camera_axes(trajectory.c2w), K):
        fov = math.degrees(2 * math.atan(k[1, 2] / k[1, 1]))
        cameras.append({"camera_to_world": c2w.reshape(-1).tolist(), "fov": fov, "aspect": width / height})
    return {
        "camera_type": "perspective",
        "render_height": int(round(height)),
        "render_width": int(round(width)),
        "camera_path": cameras,
        "fps": NERFSTUDIO_FPS,
        "seconds": len(cameras) / NERFSTUDIO_FPS,
        "smoothness_value": 0,
        "is_cycle": False,
        "crop": None,
    }


def from_nerfstudio(data: dict) -> Trajectory:
    cameras = data.get("camera_path")
    if not isinstance(cameras, list) or not cameras:
        raise TrajectoryError(
            "nerfstudio camera path: 'camera_path' must be a non-empty list of cameras",
            "see docs/trajectories.md for the format",
        )
    check_latents(len(cameras), "nerfstudio camera path")
    try:
        height = float(data.get("render_height", 2 * DEFAULT_K[1, 2]))
        width = float(data.get("render_width", 2 * DEFAULT_K[0, 2]))
    except (TypeError, ValueError):
        raise TrajectoryError("nerfstudio camera path: render_height/render_width must be numbers") from None
    if not (math.isfinite(width) and math.isfinite(height) and width > 0 and height > 0):
        raise TrajectoryError("nerfstudio camera path: render_height/render_width must be positive")
    c2w, K = [], []
    for index, camera in enumerate(cameras):
        if not isinstance(camera, dict) or "camera_to_world" not in camera:
            raise TrajectoryError(f"nerfstudio camera path: camera {index} has no 'camera_to_world'")
        matrix = _numbers(camera["camera_to_world"], f"nerfstudio camera {index} camera_to_world").reshape(-1)
        if matrix.size == 12:
            matrix = np.concatenate([matrix, [0.0, 0.0, 0.0, 1.0]])
        if matrix.size != 16:
            raise TrajectoryError(
                f"nerfstudio camera path: camera {index} camera_to_world needs 16 numbers (row-major 4x4)"
            )
        c2w.append(matrix.reshape(4, 4))
        fov = _numbers(camera.get("fov", 50.0), f"nerfstudio camera {index} fov")
        if fov.shape != () or not 0 < float(fov) < 180:
            raise TrajectoryError(f"nerfstudio camera path: camera {index} fov must be a number of degrees in (0, 180)")
        focal = height / (2 * math.tan(math.radians(float(fov)) / 2))
        K.append([[focal, 0.0, width / 2], [0.0, focal, height / 2], [0.0, 0.0, 1.0]])
    return Trajectory(flip_camera_axes(np.stack(c2w)), np.array(K))


# matrices ------------------------------------------------------------------------------------


def to_matrices(trajectory: Trajectory, axes: str = "opencv", kind: str = "c2w") -> list:
    c2w = flip_camera_axes(trajectory.c2w) if axes == "opengl" else trajectory.c2w
    return (np.linalg.inv(c2w) if kind == "w2c" else c2w).tolist()


def from_matrices(data, axes: str = "opencv", kind: str = "c2w") -> Trajectory:
    if isinstance(data, list):
        check_latents(len(data), "matrices")
    matrices = _numbers(data, "matrices")
    if matrices.ndim != 3 or matrices.shape[1:] != (4, 4) or len(matrices) == 0:
        raise TrajectoryError(f"matrices: expected a list of 4x4 matrices, got shape {matrices.shape}")
    c2w = np.linalg.inv(matrices) if kind == "w2c" else matrices
    return Trajectory(flip_camera_axes(c2w) if axes == "opengl" else c2w)


# plain CSV / JSON ----------------------------------------------------------------------------


def plain_rows(trajectory: Trajectory) -> list[dict]:
    positions, ypr, K = trajectory.positions(), trajectory.yaw_pitch_roll(), trajectory.K
    return [
        {
            "latent": index,
            "x": positions[index, 0],
            "y": positions[index, 1],
            "z": positions[index, 2],
            "yaw": ypr[index, 0],
            "pitch": ypr[index, 1],
            "roll": ypr[index, 2],
            "fx": K[index, 0, 0],
            "fy": K[index, 1, 1],
            "cx": K[index, 0, 2],
            "cy": K[index, 1, 2],
        }
        for index in range(trajectory.num_latents)
    ]


def to_plain_json(trajectory: Trajectory) -> dict:
    rows = [
        {key: float(value) if key != "latent" else value for key, value in row.items()}
        for row in plain_rows(trajectory)
    ]
    return {"format": PLAIN_FORMAT_TAG, "version": 1, "axes": "opencv", "angles": "degrees", "poses": rows}


def from_plain_json(data: dict) -> Trajectory:
    if data.get("axes", "opencv") != "opencv" or data.get("angles", "degrees") != "degrees":
        raise TrajectoryError("plain pose JSON: only axes 'opencv' and angles 'degrees' are supported")
    poses = data.get("poses")
    if not isinstance(poses, list) or not poses:
        raise TrajectoryError("plain pose JSON: 'poses' must be a non-empty list of rows")
    return _from_rows(poses, "plain pose JSON")


def _write_csv(rows: list[dict]) -> str:
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=PLAIN_COLUMNS, lineterminator="\n")
    writer.writeheader()
    for row in rows:
        writer.writerow({key: (repr(float(value)) if key != "latent" else value) for key, value in row.items()})
    return buffer.getvalue()


def _read_csv(path: Path) -> list[dict]:
    text = read_text(path)
    reader = csv.DictReader(io.StringIO(text))
    missing = [
        column for column in ("latent", "x", "y", "z", "yaw", "pitch") if column not in (reader.fieldnames or [])
    ]
    if missing:
        raise TrajectoryError(
            f"{path}: CSV is missing column(s) {', '.join(missing)}", f"the header is {','.join(PLAIN_COLUMNS)}"
        )
    return list(reader)


def _from_rows(rows: list, name: str) -> Trajectory:
    """Rows with latent, x, y, z, yaw, pitch (roll, fx, fy, cx, cy optional) in any order of latents."""
    if not rows:
        raise TrajectoryError(f"{name}: no poses", f"the columns are {','.join(PLAIN_COLUMNS)}, one row per latent")
    check_latents(len(rows), name)
    by_latent: dict[int, dict] = {}
    for number, row in enumerate(rows, start=1):
        if not isinstance(row, dict):
            raise TrajectoryError(f"{name}: row {number} is not an object with x, y, z, yaw, pitch")
        latent = _row_number(row, "latent", number, name)
        if latent != int(latent) or latent < 0:
            raise TrajectoryError(f"{name}: row {number} latent {latent} is not a non-negative whole number")
        if int(latent) in by_latent:
            raise TrajectoryError(f"{name}: latent {int(latent)} appears twice")
        by_latent[int(latent)] = row
    missing = sorted(set(range(len(by_latent))) - set(by_latent))
    if missing:
        raise TrajectoryError(f"{name}: latent {missing[0]} is missing (latents must be 0..{len(by_latent) - 1})")
    c2w, K = [], []
    for latent in range(len(by_latent)):
        row = by_latent[latent]
        values = {
            key: _row_number(row, key, latent, name, optional=key not in PLAIN_COLUMNS[:6]) for key in PLAIN_COLUMNS
        }
        pose = np.eye(4)
        pose[:3, :3] = rotation_from_ypr(*(math.radians(values[key] or 0.0) for key in ("yaw", "pitch", "roll")))
        pose[:3, 3] = [values["x"], values["y"], values["z"]]
        c2w.append(pose)
        intrinsics = [values[key] for key in ("fx", "fy", "cx", "cy")]
        if any(value is None for value in intrinsics):
            K.append(DEFAULT_K)
        else:
            fx, fy, cx, cy = intrinsics
            K.append([[fx, 0.0, cx], [0.0, fy, cy], [0.0, 0.0, 1.0]])
    return Trajectory(np.stack(c2w), np.array(K, dtype=np.float64))


def _row_number(row: dict, key: str, where, name: str, optional: bool = False):
    value = row.get(key)
    if value is None or (isinstance(value, str) and not value.strip()):
        if optional:
            return None
        raise TrajectoryError(f"{name}: row {where} has no {key!r}")
    try:
        if isinstance(value, bool):
            raise ValueError
        number = float(value)
    except (TypeError, ValueError):
        raise TrajectoryError(f"{name}: row {where} {key!r} is not a number: {value!r}") from None
    if not math.isfinite(number):
        raise TrajectoryError(f"{name}: row {where} {key!r} is not finite")
    return number


def _numbers(value, what: str) -> np.ndarray:
    try:
        if isinstance(value, (str, bool)):
            raise ValueError
        array = np.array(value, dtype=np.float64)
    except (TypeError, ValueError):
        raise TrajectoryError(f"{what} must be numbers") from None
    if not np.all(np.isfinite(array)):
        raise TrajectoryError(f"{what} contains a non-finite number")
    return array


__all__ = [
    "AXES",
    "FORMATS",
    "FORMAT_HINT",
    "KINDS",
    "detect_format",
    "dumps",
    "from_matrices",
    "from_nerfstudio",
    "from_plain_json",
    "key_settings",
    "load",
    "parse_format",
    "parse_json_text",
    "plain_rows",
    "save",
    "to_matrices",
    "to_nerfstudio",
    "to_plain_json",
]
