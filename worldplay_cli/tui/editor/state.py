"""Editor state without any UI: document, cursor, selection, clipboard, undo/redo and the key grammar.

The key grammar is small and vim-flavoured, so it can be tested without a terminal:

- an action key (`w a s d`, the four turns, `hold`) inserts one latent after the cursor and moves onto it;
- digits before it are a count (`8w` inserts eight);
- `+` then an action key adds that action to what was just inserted (`8w` `+` `→` makes eight `W+→`),
  or, after anything else, to the selection or the latent at the cursor;
- latched actions (toggled with shift) are added to every inserted latent, like holding a key down;
- `r` then an action key replaces the latent(s) at the cursor instead of inserting.

Every change that edits the document is one undo step; consecutive edits of the segment text merge
into one. Record mode collects key presses and appends one latent per tick of the latent clock.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from trajectories import CHUNK, MODELS, Trajectory, TrajectoryError, frames_to_latents, load_trajectory
from trajectories.latents import nearest_valid_latents
from trajectories.poses import DEFAULT_ROTATION_STEP_DEG, DEFAULT_TRANSLATION_STEP, Move
from trajectories.validation import ValidationReport, validate_length
from worldplay_cli.tui.editor.document import (
    AXIS,
    HOLD,
    HOLD_MOVE,
    ROTATIONS,
    Document,
    PathCache,
    Step,
    combined,
    document_trajectory,
    keyboard_step,
    steps_from_text,
)

# A long trajectory is a few hundred latents; this only stops a stray count like `99999w`.
MAX_LATENTS = 4096
HISTORY_LIMIT = 500
TRANSLATION_STEPS = (0.01, 0.02, 0.04, DEFAULT_TRANSLATION_STEP, 0.12, 0.16, 0.24, 0.32, 0.5)
ROTATION_STEPS = (0.5, 1.0, 1.5, 2.0, DEFAULT_ROTATION_STEP_DEG, 5.0, 10.0, 15.0, 30.0)


@dataclass(frozen=True)
class Snapshot:
    document: Document
    cursor: int


class EditorState:
    """Everything the editor edits; the app calls these methods and redraws from the attributes."""

    def __init__(self, document: Document | None = None, *, model: str = "ar", frames: int | None = None):
        if model not in MODELS:
            raise TrajectoryError(f"unknown model {model!r}", f"use one of: {', '.join(MODELS)}")
        if frames is not None:
            frames_to_latents(frames)  # a TrajectoryError for frame counts that are not 4k+1
        self.document = document or Document()
        self.model = model
        self.frames = frames
        self.cursor = self.document.num_latents - 1
        self.anchor: int | None = None
        self.cache = PathCache()
        self.cache.update(self.document)
        self.saved = self.document
        self.clipboard: tuple[Step, ...] = ()
        self.translation_step = DEFAULT_TRANSLATION_STEP
        self.rotation_step = DEFAULT_ROTATION_STEP_DEG
        self.latched: frozenset[str] = frozenset()
        self.count_text = ""
        self.pending: str | None = None  # "combine" or "replace": what the next action key does
        self.last_insert: tuple[int, int] | None = None  # (first latent, count) of the previous insert
        self.recording = False
        self.record_keys: list[str] = []
        self.message = ""
        self.version = 0
        self._undo: list[Snapshot] = []
        self._redo: list[Snapshot] = []
        self._text_session = False

    # Derived ---------------------------------------------------------------------------------------

    @property
    def num_latents(self) -> int:
        return self.document.num_latents

    @property
    def chunk(self) -> int:
        return CHUNK[self.model]

    @property
    def dirty(self) -> bool:
        return self.document != self.saved

    @property
    def can_undo(self) -> bool:
        return bool(self._undo)

    @property
    def can_redo(self) -> bool:
        return bool(self._redo)

    def validation(self) -> ValidationReport:
        return validate_length(self.model, self.num_latents, self.frames)

    def target_latents(self, how: str) -> int | None:
        """The latent count `fix(how)` would produce, None if that fix cannot reach a valid length."""
        if self.frames is not None:
            target = frames_to_latents(self.frames)
            if how == "pad":
                return target if target >= self.num_latents else None
            return target if target <= self.num_latents else None
        below, above = nearest_valid_latents(self.model, self.num_latents)
        return above if how == "pad" else below

    def selection(self) -> tuple[int, int] | None:
        """(first, last) latents of the selection, never including latent 0 (the start pose)."""
        if self.anchor is None:
            return None
        first, last = sorted((self.anchor, self.cursor))
        first = max(first, 1)
        return (first, last) if first <= last else None

    def trajectory(self) -> Trajectory:
        return document_trajectory(self.document, self.cache.c2w)

    def step_for(self, action: str) -> float:
        if action == "hold":
            return 0.0
        return self.rotation_step if action in ROTATIONS else self.translation_step

    # Changing the document ----------------------------------------------------------------------

    def _commit(self, document: Document, cursor: int, *, text_session: bool = False) -> bool:
        if document.num_latents > MAX_LATENTS:
            self._say(f"a trajectory can have at most {MAX_LATENTS} latents")
            return False
        if not (text_session and self._text_session):
            self._undo.append(Snapshot(self.document, self.cursor))
            del self._undo[:-HISTORY_LIMIT]
        self._redo.clear()
        self._text_session = text_session
        self._set(document, cursor)
        return True

    def _set(self, document: Document, cursor: int) -> None:
        self.document = document
        self.cache.update(document)
        self.cursor = max(0, min(cursor, document.num_latents - 1))
        if self.anchor is not None and self.anchor >= document.num_latents:
            self.anchor = None
        self.version += 1

    def _say(self, message: str) -> None:
        """Show `message` in the summary (a version bump, so it is drawn even if nothing else changed)."""
        self.message = message
        self.version += 1

    def _take_count(self) -> int:
        count = int(self.count_text or "1")
        self.count_text = ""
        return min(count, MAX_LATENTS)

    def _idle(self) -> None:
        """Forget what a following `+` or action key would have continued."""
        self.pending = None
        self.last_insert = None
        self._text_session = False

    def digit(self, digit: str) -> None:
        if digit == "0" and not self.count_text:
            self.goto(0)
            return
        self.count_text = (self.count_text + digit)[-4:]
        self.version += 1

    def action(self, name: str) -> None:
        """An action key: `w a s d`, `right left up down` or `hold` (see the module docstring)."""
        self._say("")
        if self.recording:
            self.record_keys.append(name)
            self.count_text = ""
            return
        count = self._take_count()
        pressed = [Move(name, self.step_for(name))] if name != "hold" else [HOLD_MOVE]
        pending, self.pending, self._text_session = self.pending, None, False
        if pending == "combine":
            self._combine_into(pressed)
            return
        # The pressed key comes last, so it wins over a latched action on the same axis.
        step = keyboard_step(self._latched_moves() + pressed)
        if pending == "replace":
            first = max(self.cursor, 1)
            count = min(count, self.num_latents - first)
            if count <= 0:
                self._say("nothing to replace: latent 0 is the start pose")
                return
            done = self._commit(self.document.splice(first, count, [step] * count), first + count - 1)
        else:
            first = self.cursor + 1
            done = self._commit(self.document.splice(first, 0, [step] * count), first + count - 1)
        self.last_insert = (first, count) if done else None

    def _latched_moves(self) -> list[Move]:
        return [Move(action, self.step_for(action)) for action in sorted(self.latched)]

    def _combine_into(self, moves: list[Move]) -> None:
        if self.last_insert is not None:
            first, count = self.last_insert
        elif self.selection() is not None:
            first, last = self.selection()
            count = last - first + 1
        elif self.cursor >= 1:
            first, count = self.cursor, 1
        else:
            self._say("nothing to combine with: latent 0 is the start pose")
            return
        steps = [combined(step, moves) for step in self.document.steps[first - 1 : first - 1 + count]]
        if self._commit(self.document.splice(first, count, steps), self.cursor):
            self.last_insert = (first, count)

    def combine(self) -> None:
        self.pending = "combine"
        self.count_text = ""
        self.version += 1

    def replace(self) -> None:
        self.pending = "replace"
        self.last_insert = None
        self.version += 1

    def toggle_latch(self, action: str) -> None:
        """Latch (or release) an action: it is added to every latent inserted until released."""
        latched = {a for a in self.latched if AXIS[a] != AXIS[action]}
        if action not in self.latched:
            latched.add(action)
        self.latched = frozenset(latched)
        self.version += 1

    def delete(self) -> None:
        """Delete the selection, or `count` latents from the cursor on."""
        count = self._take_count()
        self._idle()
        selection = self.selection()
        if selection is not None:
            first, last = selection
            count = last - first + 1
            self.anchor = None
        elif self.cursor == 0:
            self._say("latent 0 is the start pose; it cannot be deleted")
            return
        else:
            first = self.cursor
            count = min(count, self.num_latents - first)
        self._commit(self.document.splice(first, count), first - 1 if first + count > self.num_latents - 1 else first)

    def backspace(self) -> None:
        """Delete `count` latents ending at the cursor and move onto the latent before them."""
        count = self._take_count()
        self._idle()
        if self.cursor == 0:
            self._say("latent 0 is the start pose; it cannot be deleted")
            return
        count = min(count, self.cursor)
        first = self.cursor - count + 1
        self._commit(self.document.splice(first, count), first - 1)

    def copy(self) -> None:
        """Copy the selection, else the segment (run of equal latents) under the cursor."""
        self._idle()
        selection = self.selection()
        if selection is None:
            run = self.document.run_at(self.cursor)
            if run is None:
                self._say("nothing to copy at latent 0")
                return
            selection = (run.first, run.last)
        first, last = selection
        self.clipboard = self.document.steps[first - 1 : last]
        self.anchor = None
        self._say(f"copied {len(self.clipboard)} latent{'s' * (len(self.clipboard) != 1)}")
        self.version += 1

    def paste(self) -> None:
        count = self._take_count()
        self._idle()
        if not self.clipboard:
            self._say("clipboard is empty: copy with y first")
            return
        steps = self.clipboard * count
        first = self.cursor + 1
        self._commit(self.document.splice(first, 0, steps), first + len(steps) - 1)

    def toggle_selection(self) -> None:
        self._idle()
        self.anchor = None if self.anchor is not None else self.cursor
        self.version += 1

    def undo(self) -> None:
        self._idle()
        if not self._undo:
            self._say("nothing to undo")
            return
        snapshot = self._undo.pop()
        self._redo.append(Snapshot(self.document, self.cursor))
        self._set(snapshot.document, snapshot.cursor)

    def redo(self) -> None:
        self._idle()
        if not self._redo:
            self._say("nothing to redo")
            return
        snapshot = self._redo.pop()
        self._undo.append(Snapshot(self.document, self.cursor))
        self._set(snapshot.document, snapshot.cursor)

    def fix(self, how: str) -> None:
        """Pad with holds or trim trailing latents to the nearest length valid for the model (and --frames)."""
        self._idle()
        if self.validation().ok:
            self._say("length is already valid")
            return
        target = self.target_latents(how)
        if target is None:
            self._say(f"cannot {how} to a valid length; try {'trim' if how == 'pad' else 'pad'}")
            return
        if target > self.num_latents:
            document = self.document.splice(self.num_latents, 0, [HOLD] * (target - self.num_latents))
        else:
            document = self.document.with_steps(self.document.steps[: target - 1])
        self._commit(document, min(self.cursor, target - 1))
        self._say(f"{'padded' if how == 'pad' else 'trimmed'} to {target} latents")

    def replace_document(self, document: Document, message: str = "") -> None:
        """Load a preset or an imported file as one undoable change."""
        self._idle()
        self.anchor = None
        self._commit(document, document.num_latents - 1)
        self.message = message

    def apply_text(self, text: str) -> str | None:
        """Replace the steps with the segment list `text`; returns the error instead if it does not parse."""
        if self.document.has_imported:
            return "this path has imported poses, which have no pose string; edit it with the keys"
        try:
            steps = steps_from_text(text)
        except TrajectoryError as error:
            return error.message + (f" (hint: {error.hint})" if error.hint else "")
        if tuple(steps) != self.document.steps:
            self.pending = None
            self.last_insert = None
            self._commit(self.document.with_steps(steps), min(self.cursor, len(steps)), text_session=True)
        return None

    def end_text_session(self) -> None:
        self._text_session = False

    def mark_saved(self) -> None:
        self.saved = self.document
        self.version += 1

    # Cursor, model, steps -------------------------------------------------------------------------

    def goto(self, latent: int) -> None:
        self._idle()
        self.count_text = ""
        self.cursor = max(0, min(latent, self.num_latents - 1))
        self.version += 1

    def move_cursor(self, delta: int) -> None:
        self.goto(self.cursor + delta * self._take_count())

    def jump_chunk(self, direction: int) -> None:
        """To the first latent of the next (or this/previous) denoising chunk."""
        chunk = self.chunk
        if direction > 0:
            self.goto((self.cursor // chunk + 1) * chunk)
        else:
            self.goto(((self.cursor - 1) // chunk) * chunk if self.cursor else 0)

    def set_model(self, model: str) -> None:
        if model not in MODELS:
            raise TrajectoryError(f"unknown model {model!r}", f"use one of: {', '.join(MODELS)}")
        self.model = model
        self.version += 1

    def cycle_model(self) -> None:
        self.set_model("bi" if CHUNK[self.model] == 4 else "ar")

    def change_step(self, kind: str, direction: int) -> None:
        """Next smaller/larger step size on the ladder for "translation" or "rotation" moves."""
        ladder, current = (
            (TRANSLATION_STEPS, self.translation_step)
            if kind == "translation"
            else (ROTATION_STEPS, self.rotation_step)
        )
        larger = [value for value in ladder if value > current]
        smaller = [value for value in ladder if value < current]
        value = (larger[0] if larger else current) if direction > 0 else (smaller[-1] if smaller else current)
        if kind == "translation":
            self.translation_step = value
        else:
            self.rotation_step = value
        self.version += 1

    def cancel(self) -> None:
        self._idle()
        self.count_text = ""
        self.anchor = None
        self._say("")

    # Record mode ---------------------------------------------------------------------------------

    def set_recording(self, recording: bool) -> None:
        self._idle()
        self.recording = recording
        self.record_keys.clear()
        if recording:
            self.cursor = self.num_latents - 1
        self.version += 1

    def record_tick(self) -> bool:
        """One tick of the latent clock: append a latent made of the keys pressed since the last tick."""
        if not self.record_keys:
            return False
        keys, self.record_keys = self.record_keys, []
        moves = self._latched_moves()
        moves += [Move(action, self.step_for(action)) if action != "hold" else HOLD_MOVE for action in keys]
        return self._commit(self.document.splice(self.num_latents, 0, [keyboard_step(moves)]), self.num_latents)


def load_document(path: Path) -> Document:
    """A document from a trajectory file (format detected: official JSON, nerfstudio, plain, matrices)."""
    from worldplay_cli.tui.editor.document import document_from_trajectory

    return document_from_trajectory(load_trajectory(path))
