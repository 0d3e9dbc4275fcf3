"""The editor's document: a start pose, intrinsics, and one step per latent after the first.

A *step* says how the camera gets from the previous latent to this one. Keyboard steps are pose-string
moves (`w`, `w+right:1.5`, `hold`); imported steps are a bare relative pose for motion the grammar cannot
say (roll, vertical moves). Keeping steps relative means inserting or deleting a latent carries the rest
of the path along, the way typing in a text editor moves the rest of the line.

Documents are immutable and cheap to copy (tuples of shared steps), so undo is a list of documents.
`PathCache` turns a document into per-latent poses and actions incrementally: an edit at latent i only
recomputes latents i and later, which keeps a key press fast on long paths.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from functools import cached_property, lru_cache

import numpy as np

from trajectories import DEFAULT_K, Trajectory, compute_actions
from trajectories.geometry import rigid_inverse, ypr_from_rotation
from trajectories.poses import Move, Segment, format_pose_string, parse_segments, segments_to_c2w

TRANSLATIONS = ("w", "s", "a", "d")
ROTATIONS = ("right", "left", "up", "down")
ACTIONS = TRANSLATIONS + ROTATIONS
# Two moves on one axis contradict (w+s) or repeat; the later one wins when steps are combined.
AXIS = {
    "w": "forward",
    "s": "forward",
    "a": "right",
    "d": "right",
    "right": "yaw",
    "left": "yaw",
    "up": "pitch",
    "down": "pitch",
}
_ORDER = {action: index for index, action in enumerate(ACTIONS)}
HOLD_MOVE = Move("hold", 0.0)

_IDENTITY = tuple(np.eye(4).ravel().tolist())
_DEFAULT_K = tuple(np.asarray(DEFAULT_K).ravel().tolist())
# An imported relative pose counts as keyboard moves when the moves rebuild it to within this.
_RECOGNISE_TOLERANCE = 1e-9
# Decoded step sizes are rounded to this many significant digits so float noise does not split runs.
_STEP_DIGITS = 10


@dataclass(frozen=True)
class Step:
    """One latent's motion: keyboard `moves`, or (imported) a 4x4 `relative` pose, row-major."""

    moves: tuple[Move, ...] = (HOLD_MOVE,)
    relative: tuple[float, ...] | None = None

    @property
    def imported(self) -> bool:
        return self.relative is not None

    @property
    def actions(self) -> frozenset[str]:
        return frozenset(move.action for move in self.moves)

    def __str__(self) -> str:
        return "imported" if self.imported else "+".join(str(move) for move in self.moves)


HOLD = Step()


def keyboard_step(moves: Iterable[Move]) -> Step:
    """A canonical keyboard step: one move per axis (later moves win), grammar order, `hold` if none."""
    by_axis: dict[str, Move] = {}
    for move in moves:
        if move.action != "hold":
            by_axis[AXIS[move.action]] = move
    if not by_axis:
        return HOLD
    return Step(tuple(sorted(by_axis.values(), key=lambda move: _ORDER[move.action])))


def combined(step: Step, moves: Iterable[Move]) -> Step:
    """`step` with `moves` added; an imported step is replaced (it has no moves to combine with)."""
    return keyboard_step((() if step.imported else step.moves) + tuple(moves))


@lru_cache(maxsize=4096)
def step_matrix(step: Step) -> np.ndarray:
    """The relative pose (previous latent -> this one) of a step, read-only."""
    if step.imported:
        matrix = np.array(step.relative, dtype=np.float64).reshape(4, 4)
    else:
        matrix = segments_to_c2w([Segment(step.moves, 1)])[1]
    matrix.setflags(write=False)
    return matrix


@lru_cache(maxsize=4096)
def step_action(step: Step) -> int:
    """The official action id of a step (the label of the latent it leads to)."""
    return int(compute_actions(np.stack([np.eye(4), step_matrix(step)]))[1])


def _rounded(value: float) -> float:
    return float(f"{value:.{_STEP_DIGITS}g}")


def recognise(relative: np.ndarray) -> Step:
    """Keyboard moves that rebuild `relative` (yaw, pitch, forward and sideways moves), else an imported step."""
    yaw, pitch, roll = np.degrees(ypr_from_rotation(relative[:3, :3]))
    sideways, vertical, forward = relative[:3, :3].T @ relative[:3, 3]
    moves = []
    for value, positive, negative in (
        (forward, "w", "s"),
        (sideways, "d", "a"),
        (yaw, "right", "left"),
        (pitch, "up", "down"),
    ):
        size = _rounded(abs(value))
        if size > _RECOGNISE_TOLERANCE:
            moves.append(Move(positive if value > 0 else negative, size))
    plausible = (
        abs(roll) < _RECOGNISE_TOLERANCE
        and abs(vertical) < _RECOGNISE_TOLERANCE
        and abs(yaw) < 180
        and abs(pitch) < 180
    )
    if plausible:
        step = keyboard_step(moves)
        if np.abs(step_matrix(step) - relative).max() < _RECOGNISE_TOLERANCE:
            return step
    return Step((), tuple(np.asarray(relative, dtype=np.float64).ravel().tolist()))


@dataclass(frozen=True)
class Run:
    """Consecutive latents with the same step: one line of the segment list."""

    first: int  # latent index of the first latent in the run (>= 1)
    step: Step
    count: int

    @property
    def last(self) -> int:
        return self.first + self.count - 1

    def __str__(self) -> str:
        if self.step.imported:
            return f"# imported-{self.count}"
        return str(Segment(self.step.moves, self.count))


@dataclass(frozen=True)
class Document:
    """Latent 0 at `start` (c2w), then one step per latent; `K` (pixels) is shared by every latent."""

    steps: tuple[Step, ...] = ()
    start: tuple[float, ...] = _IDENTITY
    K: tuple[float, ...] = field(default=_DEFAULT_K)  # noqa: N815 (the intrinsics' conventional name)

    @property
    def num_latents(self) -> int:
        return len(self.steps) + 1

    def step(self, latent: int) -> Step | None:
        """The step leading to `latent`; None for latent 0, the start pose."""
        return self.steps[latent - 1] if latent >= 1 else None

    def with_steps(self, steps: Sequence[Step]) -> Document:
        return Document(tuple(steps), self.start, self.K)

    def splice(self, first: int, remove: int, insert: Sequence[Step] = ()) -> Document:
        """Replace `remove` latents starting at latent `first` (>= 1) with steps `insert`."""
        index = first - 1
        return self.with_steps(self.steps[:index] + tuple(insert) + self.steps[index + remove :])

    def runs(self) -> tuple[Run, ...]:
        return self._runs

    @cached_property
    def _runs(self) -> tuple[Run, ...]:
        # Cached per document (documents are immutable); the text panel and summary read it on every key.
        runs: list[Run] = []
        first = 1
        for latent, step in enumerate(self.steps, start=1):
            previous = self.steps[first - 1]
            if step is not previous and step != previous:
                runs.append(Run(first, self.steps[first - 1], latent - first))
                first = latent
        if self.steps:
            runs.append(Run(first, self.steps[first - 1], len(self.steps) + 1 - first))
        return tuple(runs)

    def run_at(self, latent: int) -> Run | None:
        return next((run for run in self.runs() if run.first <= latent <= run.last), None)

    @cached_property
    def has_imported(self) -> bool:
        return any(run.step.imported for run in self._runs)

    @property
    def exact(self) -> bool:
        """Whether the pose string alone reproduces this path: keyboard steps, identity start, default K."""
        return bool(self.steps) and not self.has_imported and self.start == _IDENTITY and self.K == _DEFAULT_K

    def segments(self) -> list[Segment]:
        return [Segment(run.step.moves, run.count) for run in self.runs()]

    def pose_string(self) -> str | None:
        """The pose string of the steps (relative to latent 0); None if a step is imported or there is none."""
        if not self.steps or self.has_imported:
            return None
        return format_pose_string(self.segments())

    def text(self) -> str:
        """The segment list as text, one segment per line (imported runs as `# imported-N` comments)."""
        return "\n".join(str(run) for run in self.runs())

    def start_matrix(self) -> np.ndarray:
        return np.array(self.start, dtype=np.float64).reshape(4, 4)

    def K_matrix(self) -> np.ndarray:  # noqa: N802
        return np.array(self.K, dtype=np.float64).reshape(3, 3)


def document_from_trajectory(trajectory: Trajectory) -> Document:
    """A document for any trajectory; relative poses that are keyboard moves become keyboard steps."""
    c2w = trajectory.c2w
    relatives = rigid_inverse(c2w[:-1]) @ c2w[1:]
    # Equal steps share one object, which keeps comparing and recomputing documents cheap.
    shared: dict[Step, Step] = {}
    return Document(
        tuple(shared.setdefault(step, step) for step in map(recognise, relatives)),
        tuple(c2w[0].ravel().tolist()),
        tuple(trajectory.K[0].ravel().tolist()),
    )


def steps_from_text(text: str) -> list[Step]:
    """Steps of a segment list: pose-string segments separated by commas or new lines.

    Lines starting with `#` are comments. A TrajectoryError names the line of the first bad segment.
    """
    from trajectories import TrajectoryError

    steps: list[Step] = []
    for number, line in enumerate(text.splitlines(), start=1):
        line = line.strip()
        if not line or line.startswith("#") or not line.strip(", "):
            continue
        try:
            segments = parse_segments(line)
        except TrajectoryError as error:
            raise TrajectoryError(f"line {number}: {error.message}", error.hint) from None
        for segment in segments:
            steps.extend([keyboard_step(segment.moves)] * segment.latents)
    return steps


def document_trajectory(document: Document, c2w: np.ndarray | None = None) -> Trajectory:
    """The Trajectory of a document; bit-identical to `parse_pose_string` when the document is exact.

    `c2w` (from a PathCache) saves recomputing the poses of a document with imported steps.
    """
    if document.exact:
        segments = document.segments()
        return Trajectory(segments_to_c2w(segments), source=format_pose_string(segments))
    if c2w is None:
        cache = PathCache()
        cache.update(document)
        c2w = cache.c2w
    return Trajectory(c2w, document.K_matrix(), source=document.pose_string())


class PathCache:
    """Per-latent poses (N,4,4) and action ids (N,) of the last document given to `update`.

    Poses compose step matrices (`c2w[i] = c2w[i-1] @ step`), so an edit recomputes only from the first
    changed latent on. The result equals the exact pose-string poses to rounding (~1e-15); the saved and
    submitted trajectory comes from `document_trajectory`, which is exact.
    """

    def __init__(self) -> None:
        self._steps: tuple[Step, ...] = ()
        self._start: tuple[float, ...] | None = None
        self.c2w = np.eye(4)[None]
        self.actions = np.zeros(1, dtype=np.int64)

    def update(self, document: Document) -> int:
        """Bring the cache up to `document`; returns the first latent whose pose changed."""
        old, new = self._steps, document.steps
        first = 0
        if document.start == self._start:
            limit = min(len(old), len(new))
            while first < limit and (old[first] is new[first] or old[first] == new[first]):
                first += 1
            if first == len(old) == len(new):
                return len(new) + 1
        c2w = np.empty((len(new) + 1, 4, 4))
        actions = np.zeros(len(new) + 1, dtype=np.int64)
        c2w[: first + 1] = self.c2w[: first + 1] if first else document.start_matrix()
        actions[: first + 1] = self.actions[: first + 1]
        # Runs repeat one Step object, so look each one up once instead of hashing it per latent.
        seen: dict[int, tuple[np.ndarray, int]] = {}
        for index in range(first, len(new)):
            step = new[index]
            entry = seen.get(id(step))
            if entry is None:
                entry = seen[id(step)] = (step_matrix(step), step_action(step))
            c2w[index + 1] = c2w[index] @ entry[0]
            actions[index + 1] = entry[1]
        self._steps, self._start = new, document.start
        self.c2w, self.actions = c2w, actions
        return first


def yaw_degrees(c2w: np.ndarray) -> np.ndarray:
    """Heading of each camera on the ground plane, degrees clockwise from world +z (seen from above)."""
    forward = c2w[:, :3, 2]
    return np.degrees(np.arctan2(forward[:, 0], forward[:, 2]))


def pitch_degrees(c2w: np.ndarray) -> np.ndarray:
    """Elevation of each camera's view axis, degrees, positive looking up (OpenCV: up is -y)."""
    forward = c2w[:, :3, 2]
    return np.degrees(np.arctan2(-forward[:, 1], np.hypot(forward[:, 0], forward[:, 2])))


def frames_of(latent: int) -> tuple[int, int]:
    """The pixel frames a latent decodes to: (0, 0) for latent 0, else (4i - 3, 4i)."""
    return (0, 0) if latent == 0 else (4 * latent - 3, 4 * latent)
