"""Pose strings: the official keyboard-like trajectory grammar, made strict, plus compound moves.

Grammar (one unit of duration is one latent = 4 video frames; latent 0 is the implicit start pose):

    pose     := segment ("," segment)*        blank segments (",,", a trailing ",") are skipped
    segment  := move ("+" move)* "-" LATENTS
    move     := ACTION [":" STEP]
    ACTION   := w | s | a | d                 forward / back / left / right along the camera's own axes
              | up | down | left | right      pitch / yaw about the camera's own axes
              | hold                          stand still (not combinable)
    STEP     := positive decimal              world units for w/s/a/d (default 0.08),
                                              degrees for up/down/left/right (default 3, below 180)
    LATENTS  := positive whole number         "4" (or "4.0", which the official parser also accepts)

Every official string gives exactly the official matrices. Per latent a segment applies, in the official
order: yaw, then pitch (both right-multiplied, i.e. about local axes), then forward and right translation
along the rotated camera axes. Compound moves (`w+right-4`) and custom steps (`w:0.12-4`) are extensions.
"""

from __future__ import annotations

import difflib
import math
import re
from dataclasses import dataclass

import numpy as np

from trajectories.errors import TrajectoryError
from trajectories.geometry import rot_x, rot_y
from trajectories.limits import check_latents

DEFAULT_TRANSLATION_STEP = 0.08
DEFAULT_ROTATION_STEP_DEG = 3.0

# action -> (motion key, sign); translation keys in world units, rotation keys in degrees.
_ACTIONS = {
    "w": ("forward", 1.0),
    "s": ("forward", -1.0),
    "a": ("right", -1.0),
    "d": ("right", 1.0),
    "up": ("pitch", 1.0),
    "down": ("pitch", -1.0),
    "left": ("yaw", -1.0),
    "right": ("yaw", 1.0),
    "hold": (None, 0.0),
}
ACTIONS = tuple(_ACTIONS)
_ROTATION_KEYS = ("yaw", "pitch")
_NUMBER = re.compile(r"^(\d+(\.\d*)?|\.\d+)$")
_WHOLE = re.compile(r"^\d+(\.0*)?$")
GRAMMAR_HINT = "write ACTION[+ACTION...][:STEP]-LATENTS, e.g. 'w-31', 'w+right-4', 'right:1.5-8'; actions: " + " ".join(
    ACTIONS
)


@dataclass(frozen=True)
class Move:
    action: str
    step: float  # world units for w/s/a/d, degrees for rotations, 0 for hold

    def __str__(self) -> str:
        if self.action == "hold" or self.step == _default_step(self.action):
            return self.action
        return f"{self.action}:{self.step:.10g}"  # 10 digits: presets like a:0.1046719 survive a round trip


@dataclass(frozen=True)
class Segment:
    moves: tuple[Move, ...]
    latents: int

    def motion(self) -> dict[str, float]:
        """One latent's motion: forward/right in world units, yaw/pitch in radians (official dict keys)."""
        motion: dict[str, float] = {}
        for move in self.moves:
            key, sign = _ACTIONS[move.action]
            if key is not None:
                motion[key] = sign * (math.radians(move.step) if key in _ROTATION_KEYS else move.step)
        return motion

    def __str__(self) -> str:
        return "+".join(str(move) for move in self.moves) + f"-{self.latents}"


def _default_step(action: str) -> float:
    key = _ACTIONS[action][0]
    if key is None:
        return 0.0
    return DEFAULT_ROTATION_STEP_DEG if key in _ROTATION_KEYS else DEFAULT_TRANSLATION_STEP


def _fail(problem: str, segment: str, column: int, hint: str = GRAMMAR_HINT) -> TrajectoryError:
    return TrajectoryError(f"pose string: {problem} in {segment!r} (column {column})", hint)


def parse_segments(text: str) -> list[Segment]:
    """Parse a pose string into segments, rejecting anything the official parser would mangle."""
    if not isinstance(text, str) or not text.strip():
        raise TrajectoryError("pose string is empty", GRAMMAR_HINT)
    segments = []
    offset = 0
    for raw in text.split(","):
        start = offset + len(raw) - len(raw.lstrip())
        offset += len(raw) + 1
        piece = raw.strip()
        if piece:
            segments.append(_parse_segment(piece, start + 1))
    if not segments:
        raise TrajectoryError(f"pose string {text!r} has no segments", GRAMMAR_HINT)
    # The length is known from the counts (plus latent 0, the implicit start pose): refuse a too long
    # trajectory before any matrix is built.
    check_latents(1 + sum(segment.latents for segment in segments), "pose string")
    return segments


def _parse_segment(piece: str, column: int) -> Segment:
    if piece.count("-") != 1:
        if "-" not in piece:
            problem = "missing '-LATENTS' duration"
        else:
            problem = "more than one '-' (durations and steps must be positive; 'a'/'s'/'left'/'down' go the other way)"
        raise _fail(problem, piece, column)
    moves_text, duration_text = (part.strip() for part in piece.split("-"))
    latents = _parse_duration(duration_text, piece, column)
    if not moves_text:
        raise _fail("missing action before '-'", piece, column)
    moves = []
    seen_keys: dict[str, str] = {}
    for move_text in moves_text.split("+"):
        move = _parse_move(move_text.strip(), piece, column)
        key = _ACTIONS[move.action][0]
        if move.action == "hold" and len(moves_text.split("+")) > 1:
            raise _fail("'hold' cannot be combined with other actions", piece, column)
        if key in seen_keys:
            other = seen_keys[key]
            problem = f"'{other}' repeated" if other == move.action else f"'{other}' and '{move.action}' cancel out"
            raise _fail(problem, piece, column)
        seen_keys[key] = move.action
        moves.append(move)
    return Segment(tuple(moves), latents)


def _parse_duration(text: str, piece: str, column: int) -> int:
    if not text:
        raise _fail("missing duration after '-'", piece, column)
    if _WHOLE.match(text):
        latents = int(float(text))
        if latents == 0:
            raise _fail("zero duration", piece, column, "durations count latents and must be at least 1")
        return latents
    if _NUMBER.match(text):
        raise _fail(f"fractional duration {text!r}", piece, column, "durations count whole latents, e.g. 'w-4'")
    raise _fail(f"duration {text!r} is not a whole number", piece, column, "durations count whole latents, e.g. 'w-4'")


def _parse_move(text: str, piece: str, column: int) -> Move:
    if not text:
        raise _fail("empty action around '+'", piece, column)
    action, _, step_text = text.partition(":")
    action = action.strip()
    if action not in _ACTIONS:
        guess = (
            action.lower()
            if action.lower() in _ACTIONS
            else next(iter(difflib.get_close_matches(action, ACTIONS, 1)), None)
        )
        hint = f"did you mean {guess!r}? actions: {' '.join(ACTIONS)}" if guess else f"actions: {' '.join(ACTIONS)}"
        raise _fail(f"unknown action {action!r}", piece, column, hint)
    if ":" not in text:
        return Move(action, _default_step(action))
    if action == "hold":
        raise _fail("'hold' takes no step size", piece, column)
    step_text = step_text.strip()
    if not _NUMBER.match(step_text) or float(step_text) <= 0:
        raise _fail(f"step {step_text!r} is not a positive number", piece, column, "e.g. 'w:0.12-4' or 'right:1.5-8'")
    step = float(step_text)
    if _ACTIONS[action][0] in _ROTATION_KEYS and step >= 180:
        raise _fail(
            f"rotation step {step_text} deg is not below 180", piece, column, "split large turns over more latents"
        )
    return Move(action, step)


def keys_motion(keys) -> dict[str, float]:
    """One latent's motion while `keys` (action names: w, a, s, d, up, down, left, right) are held, with the
    grammar's default steps; opposite keys cancel (w+s moves nowhere). Nothing held is `{}` (hold)."""
    held = set(keys)
    unknown = sorted(held - set(_ACTIONS) | held & {"hold"})
    if unknown:
        raise TrajectoryError(f"unknown key {unknown[0]!r}", "keys: " + " ".join(ACTIONS[:-1]))
    signs: dict[str, float] = {}
    for action in held:
        key, sign = _ACTIONS[action]
        signs[key] = signs.get(key, 0.0) + sign
    kept = tuple(Move(action, _default_step(action)) for action in sorted(held) if signs[_ACTIONS[action][0]])
    return Segment(kept, 1).motion()


def motions_to_c2w(motions: list[dict[str, float]], start: np.ndarray | None = None) -> np.ndarray:
    """Camera-to-world matrices (len(motions) + 1, 4, 4) from per-latent motions, starting at `start`
    (identity by default).

    Same operation order as the official generator (yaw, pitch, forward, right), so official strings
    reproduce its matrices to the last bit or two. Continuing from the last pose of an earlier call gives
    exactly the matrices of one call over all the motions (a live session extends its path this way).
    """
    pose = np.eye(4) if start is None else np.array(start, dtype=np.float64)
    poses = [pose.copy()]
    for motion in motions:
        if "yaw" in motion:
            pose[:3, :3] = pose[:3, :3] @ rot_y(motion["yaw"])
        if "pitch" in motion:
            pose[:3, :3] = pose[:3, :3] @ rot_x(motion["pitch"])
        if motion.get("forward", 0.0) != 0:
            pose[:3, 3] += pose[:3, :3] @ np.array([0.0, 0.0, motion["forward"]])
        if motion.get("right", 0.0) != 0:
            pose[:3, 3] += pose[:3, :3] @ np.array([motion["right"], 0.0, 0.0])
        poses.append(pose.copy())
    return np.stack(poses)


def segments_to_c2w(segments: list[Segment]) -> np.ndarray:
    motions = [segment.motion() for segment in segments for _ in range(segment.latents)]
    return motions_to_c2w(motions)


def format_pose_string(segments: list[Segment]) -> str:
    """Canonical text of parsed segments (default steps omitted), e.g. "w-3, w+right:1.5-4"."""
    return ", ".join(str(segment) for segment in segments)
