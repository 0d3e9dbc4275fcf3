"""The official pose JSON: {"0": {"extrinsic": c2w 4x4, "K": 3x3 pixels}, "1": ...}.

The official reader walks the keys in file order; we sort them numerically and insist on exactly
0..N-1, so a reordered or gappy file is either read correctly or rejected, never silently permuted.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np

from trajectories.errors import TrajectoryError
from trajectories.limits import check_file_size, check_latents

_INDEX = re.compile(r"^(0|[1-9]\d*)$")
FORMAT_HINT = 'the official format is {"0": {"extrinsic": <4x4 camera-to-world>, "K": <3x3 pixels>}, "1": ...}'


def read_json(path: Path):
    """Parse a JSON file, rejecting duplicate keys and NaN/Infinity (which Python's json accepts)."""
    return parse_json_text(read_text(path), str(path))


def read_text(path: Path) -> str:
    """A trajectory file's text; its size is checked against the limit before it is read."""
    path = Path(path)
    try:
        if path.is_dir():
            raise TrajectoryError(
                f"{path} is a directory, not a trajectory file", "give the path of a .json or .csv file"
            )
        check_file_size(path.stat().st_size, path)
        return path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise TrajectoryError(
            f"file not found: {path}", "check the path, or give a pose string like 'w-31' or a preset name"
        ) from None
    except PermissionError:
        raise TrajectoryError(f"cannot read {path}: permission denied", "check the file's permissions") from None
    except UnicodeDecodeError as exc:
        raise TrajectoryError(
            f"cannot read {path}: not UTF-8 text ({exc.reason} at byte {exc.start})", "save the file as UTF-8"
        ) from None
    except OSError as exc:
        raise TrajectoryError(f"cannot read {path}: {exc.strerror or exc}", "check the path") from None


def parse_json_text(text: str, name: str = "JSON"):
    def no_duplicates(pairs):
        seen = {}
        for key, value in pairs:
            if key in seen:
                raise TrajectoryError(f"{name}: duplicate key {key!r}", "every key may appear only once")
            seen[key] = value
        return seen

    def no_constants(constant):
        raise TrajectoryError(f"{name}: non-finite number {constant}", "poses and intrinsics must be finite numbers")

    try:
        return json.loads(text, object_pairs_hook=no_duplicates, parse_constant=no_constants)
    except json.JSONDecodeError as exc:
        raise TrajectoryError(
            f"{name}: invalid JSON at line {exc.lineno} column {exc.colno}: {exc.msg}", "fix the JSON syntax there"
        ) from None
    except RecursionError:
        # Python's parser recurses per level of nesting; no trajectory format nests more than 4 deep.
        raise TrajectoryError(f"{name}: JSON nested too deeply", FORMAT_HINT) from None


def official_arrays(data) -> tuple[np.ndarray, np.ndarray]:
    """(c2w (N,4,4), K (N,3,3)) from a parsed official pose JSON object."""
    if not isinstance(data, dict) or not data:
        raise TrajectoryError("official pose JSON must be a non-empty object keyed by latent index", FORMAT_HINT)
    indices = {}
    for key in data:
        if not isinstance(key, str) or not _INDEX.match(key.strip()):
            raise TrajectoryError(f"official pose JSON: key {key!r} is not a latent index", FORMAT_HINT)
        index = int(key)
        if index in indices:
            raise TrajectoryError(
                f"official pose JSON: keys {indices[index]!r} and {key!r} are the same latent", FORMAT_HINT
            )
        indices[index] = key
    check_latents(len(indices), "official pose JSON")
    missing = sorted(set(range(len(indices))) - set(indices))
    if missing:
        raise TrajectoryError(
            f"official pose JSON: latent {missing[0]} is missing (keys must be 0..{len(indices) - 1} without gaps)",
            FORMAT_HINT,
        )
    c2w = np.stack([_matrix(data[indices[i]], "extrinsic", (4, 4), i) for i in range(len(indices))])
    K = np.stack([_matrix(data[indices[i]], "K", (3, 3), i) for i in range(len(indices))])
    return c2w, K


def _matrix(entry, field: str, shape: tuple[int, int], latent: int) -> np.ndarray:
    if not isinstance(entry, dict) or field not in entry:
        raise TrajectoryError(f"official pose JSON: latent {latent} has no {field!r}", FORMAT_HINT)
    value = entry[field]
    try:
        matrix = np.array(value, dtype=np.float64)
    except (TypeError, ValueError):
        matrix = None
    if matrix is None or matrix.shape != shape or isinstance(value, str) or _has_bool(value):
        raise TrajectoryError(
            f"official pose JSON: latent {latent} {field!r} must be a {shape[0]}x{shape[1]} array of numbers",
            FORMAT_HINT,
        )
    if not np.all(np.isfinite(matrix)):
        raise TrajectoryError(
            f"official pose JSON: latent {latent} {field!r} contains a non-finite number",
            "poses and intrinsics must be finite numbers",
        )
    return matrix


def _has_bool(value) -> bool:
    if isinstance(value, bool):
        return True
    return isinstance(value, list) and any(_has_bool(item) for item in value)


def official_dict(c2w: np.ndarray, K: np.ndarray) -> dict:
    """The official JSON object; floats are written with repr, so the round trip is exact."""
    return {str(i): {"extrinsic": c2w[i].tolist(), "K": K[i].tolist()} for i in range(len(c2w))}


def dump_official(data: dict) -> str:
    return json.dumps(data, indent=4) + "\n"
