"""The trajectory editor app, assembled from injected parts.

`EditorApp(state, path=..., reference=..., image_path=..., submitter=...)`: the state to edit, where it
saves, the reference image for the live preview (an HxWx3 uint8 array, optional) and the function that
enqueues a job (`submit.submit_trajectory` bound to settings and a Redis connection). Tests build the app
with their own parts; `worldplay traj edit` builds it from the command line and settings.

Slow work runs in thread workers (preview rendering, submitting) and reports back with messages, so a
key press only updates the state and redraws.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path

import numpy as np
from textual import events, on, work
from textual.app import App, ComposeResult, SystemCommand
from textual.containers import Horizontal, Vertical
from textual.screen import Screen
from textual.widgets import Footer, Label, TextArea
from textual.worker import get_current_worker

from trajectories import CHUNK, PRESETS, TrajectoryError, load_trajectory, save_trajectory
from worldplay_cli.tui.editor.document import document_from_trajectory
from worldplay_cli.tui.editor.keymap import COMMANDS, bindings
from worldplay_cli.tui.editor.messages import LatentClicked, PreviewRendered
from worldplay_cli.tui.editor.screens import ConfirmQuitScreen, HelpScreen, PathScreen, PresetScreen, SubmitScreen
from worldplay_cli.tui.editor.state import EditorState
from worldplay_cli.tui.editor.submit import SubmitForm, Submitted, Submitter
from worldplay_cli.tui.editor.widgets import PathView, Summary, Timeline
from worldplay_cli.tui.widgets import HalfBlockImage, image_size_for

# WorldPlay videos are 24 fps and a latent is 4 frames: play and record run at 6 latents per second.
LATENTS_PER_SECOND = 6.0


@dataclass
class EditorResult:
    """What the session left behind, for `--json` and scripts."""

    path: Path | None
    saved: bool
    num_latents: int
    num_frames: int
    pose: str | None
    job_ids: list[str] = field(default_factory=list)


class EditorScreen(Screen):
    """The main screen: map, side view, preview, timeline, segment list and summary."""

    BINDINGS = bindings()

    def __init__(self, state: EditorState):
        super().__init__()
        self.state = state
        self._shown_version = -1
        self._shown_text: str | None = None
        self._text_error: str | None = None
        self._unapplied_text = False  # the text box holds text that did not parse (its error is shown)
        self._preview_key: tuple = ()
        self._fitted: dict[tuple[int, int], np.ndarray] = {}
        self.playing = False

    @property
    def editor(self) -> EditorApp:
        return self.app  # type: ignore[return-value]

    def compose(self) -> ComposeResult:
        with Horizontal(id="views"):
            yield PathView("top", id="map")
            with Vertical(id="side-column"):
                yield PathView("side", id="side")
                if self.editor.reference is not None:
                    yield HalfBlockImage(id="preview")
        yield Timeline(id="timeline")
        with Horizontal(id="bottom"):
            with Vertical(id="segments"):
                yield TextArea("", id="segment-text", soft_wrap=False, tab_behavior="focus")
                yield Label("", id="segment-error", classes="error")
            yield Summary(id="summary")
        yield Footer()

    def on_mount(self) -> None:
        self.query_one("#segments").border_title = "segments (e edits)"
        if self.editor.reference is not None:
            self.query_one("#preview").border_title = "preview"
        self._play_timer = self.set_interval(1 / LATENTS_PER_SECOND, self._play_tick, pause=True)
        self._record_timer = self.set_interval(1 / LATENTS_PER_SECOND, self._record_tick, pause=True)
        self.query_one(Timeline).focus()
        self.sync(force=True)

    # Redrawing ---------------------------------------------------------------------------------

    def sync(self, force: bool = False) -> None:
        """Redraw whatever depends on the state, if the state changed since the last redraw."""
        state = self.state
        if state.version == self._shown_version and not force:
            return
        changed = state.version != self._shown_version
        self._shown_version = state.version
        for view in self.query(PathView):
            view.show(state)
        self.query_one(Timeline).show(state)
        self.query_one(Summary).show(state, playing=self.playing)
        self._sync_text(changed)
        self._update_title()
        self._request_preview()

    def _sync_text(self, changed: bool) -> None:
        text_area = self.query_one("#segment-text", TextArea)
        text_area.read_only = self.state.document.has_imported
        if text_area.has_focus:
            return
        if self._unapplied_text and not changed:
            # Text that does not parse stays, with its error, until the user fixes it or changes the path
            # another way: losing it on leaving the text box would throw away typing without a word.
            return
        self._unapplied_text = False
        text = self.state.document.text()
        if text != text_area.text:
            self._shown_text = text
            text_area.load_text(text)
        self._show_text_error(None)

    def _show_text_error(self, error: str | None) -> None:
        # Only touch the label when its text changes: an update is a layout pass of the whole screen.
        if error != self._text_error:
            self._text_error = error
            self.query_one("#segment-error", Label).update(error or "")

    def _update_title(self) -> None:
        path = self.editor.path
        name = path.name if path is not None else "untitled"
        self.query_one("#summary").border_title = name + (" ●" if self.state.dirty else "")
        self.editor.sub_title = name

    # Preview -------------------------------------------------------------------------------------

    def _request_preview(self) -> None:
        reference = self.editor.reference
        if reference is None:
            return
        pane = self.query_one("#preview", HalfBlockImage)
        columns, rows = pane.content_size
        size = image_size_for(reference.shape[1] / reference.shape[0], columns, rows)
        key = (self.state.version, self.state.cursor, size)
        if key == self._preview_key or size == (0, 0):
            return
        self._preview_key = key
        c2w = self.state.cache.c2w
        relative = np.linalg.inv(c2w[0]) @ c2w
        pane.border_title = f"preview · latent {self.state.cursor}"
        self._render_preview(self.state.cursor, relative, self.state.document.K_matrix(), size)

    @work(thread=True, exclusive=True, group="preview")
    def _render_preview(self, latent: int, relative: np.ndarray, K: np.ndarray, size: tuple[int, int]) -> None:  # noqa: N803
        from trajectories.render import SceneDepth, fit_image, normalize_intrinsics, render_view

        fitted = self._fitted.get(size)
        if fitted is None:
            fitted = self._fitted[size] = fit_image(self.editor.reference, *size)
        scene = SceneDepth().for_trajectory(relative)
        image = render_view(fitted, relative[latent], normalize_intrinsics(K), out_size=size, scene=scene)
        # A newer key press superseded this render while it ran: its frame would flash an old view.
        if not get_current_worker().is_cancelled:
            self.post_message(PreviewRendered(latent, image))

    @on(PreviewRendered)
    def _preview_rendered(self, message: PreviewRendered) -> None:
        self.query_one("#preview", HalfBlockImage).set_image(message.image)

    def on_resize(self) -> None:
        self.call_after_refresh(self._request_preview)

    # Mouse and text ------------------------------------------------------------------------------

    @on(LatentClicked)
    def _clicked(self, message: LatentClicked) -> None:
        self.state.goto(message.latent)
        self.sync()

    @on(TextArea.Changed, "#segment-text")
    def _text_changed(self, event: TextArea.Changed) -> None:
        text = event.text_area.text
        if text == self._shown_text:
            return
        self._shown_text = None
        error = self.state.apply_text(text)
        self._unapplied_text = error is not None
        self._show_text_error(error)
        self.sync()

    @on(events.DescendantBlur, "#segment-text")
    def _text_left(self) -> None:
        self.state.end_text_session()
        if self._unapplied_text:
            self.notify(f"segment text not applied: {self._text_error}", severity="warning", timeout=8)
        self.sync(force=True)

    # Actions: authoring --------------------------------------------------------------------------

    def _do(self, method, *args) -> None:
        method(*args)
        self.sync()

    def action_move(self, action: str) -> None:
        self._do(self.state.action, action)

    def action_latch(self, action: str) -> None:
        self._do(self.state.toggle_latch, action)

    def action_combine(self) -> None:
        self._do(self.state.combine)

    def action_replace(self) -> None:
        self._do(self.state.replace)

    def action_digit(self, digit: str) -> None:
        self._do(self.state.digit, digit)

    def action_delete(self) -> None:
        self._do(self.state.delete)

    def action_backspace(self) -> None:
        self._do(self.state.backspace)

    def action_select(self) -> None:
        self._do(self.state.toggle_selection)

    def action_copy(self) -> None:
        self._do(self.state.copy)

    def action_paste(self) -> None:
        self._do(self.state.paste)

    def action_undo(self) -> None:
        self._do(self.state.undo)

    def action_redo(self) -> None:
        self._do(self.state.redo)

    def action_step(self, kind: str, direction: int) -> None:
        self._do(self.state.change_step, kind, direction)

    def action_fix(self, how: str) -> None:
        self._do(self.state.fix, how)

    def action_model(self) -> None:
        self._do(self.state.cycle_model)

    def action_record(self) -> None:
        recording = not self.state.recording
        self.state.set_recording(recording)
        if recording:
            self._record_timer.resume()
        else:
            self._record_timer.pause()
        self.sync()

    def _record_tick(self) -> None:
        if self.state.record_tick():
            self.sync()

    # Actions: navigation and view ----------------------------------------------------------------

    def action_cursor(self, delta: int) -> None:
        self._do(self.state.move_cursor, delta)

    def action_goto(self, where: str) -> None:
        self._do(self.state.goto, 0 if where == "start" else self.state.num_latents - 1)

    def action_chunk(self, direction: int) -> None:
        self._do(self.state.jump_chunk, direction)

    def action_cancel(self) -> None:
        self.query_one(Timeline).focus()
        self._do(self.state.cancel)

    def action_edit_text(self) -> None:
        self.query_one("#segment-text", TextArea).focus()

    def action_play(self) -> None:
        self.playing = not self.playing
        if self.playing:
            if self.state.cursor == self.state.num_latents - 1:
                self.state.goto(0)
            self._play_timer.resume()
        else:
            self._play_timer.pause()
        self.sync(force=True)

    def _play_tick(self) -> None:
        self.state.goto((self.state.cursor + 1) % self.state.num_latents)
        self.sync()

    def action_zoom(self, factor: float) -> None:
        for view in self.query(PathView):
            view.zoom(factor)

    def action_pan(self, right: int, up: int) -> None:
        self.query_one("#map", PathView).pan(right, up)

    def action_fit(self) -> None:
        for view in self.query(PathView):
            view.fit()

    # Actions: files, presets, submit, help -------------------------------------------------------

    def action_help(self) -> None:
        self.app.push_screen(HelpScreen())

    def action_presets(self) -> None:
        def chosen(name: str | None) -> None:
            if name:
                document = document_from_trajectory(PRESETS[name].trajectory())
                self._do(self.state.replace_document, document, f"loaded preset {name}")

        self.app.push_screen(PresetScreen(), chosen)

    def action_open(self) -> None:
        self.app.push_screen(PathScreen("import a trajectory", self.import_file, formats=True))

    def import_file(self, path: Path, fmt: str | None) -> str | None:
        """Replace the path with a file's (one undo step); returns an error message instead on failure."""
        try:
            trajectory = load_trajectory(path, fmt)
        except TrajectoryError as error:
            return error.message + (f" (hint: {error.hint})" if error.hint else "")
        except OSError as error:
            return f"cannot read {path}: {error.strerror}"
        message = f"imported {path.name}: {trajectory.num_latents} latents"
        if not np.allclose(trajectory.K, trajectory.K[0]):
            message += " (intrinsics vary along the path; the editor keeps latent 0's)"
        self._do(self.state.replace_document, document_from_trajectory(trajectory), message)
        return None

    def action_save(self, then_quit: bool = False) -> None:
        if self.editor.path is None:
            self.action_save_as(then_quit)
            return
        error = self.save_to(self.editor.path)
        if error:
            self.notify(error, severity="error")
        elif then_quit:
            self.editor.finish()

    def action_save_as(self, then_quit: bool = False) -> None:
        def saved(path: Path | None) -> None:
            if path is not None and then_quit:
                self.editor.finish()

        value = str(self.editor.path) if self.editor.path else ""
        self.app.push_screen(
            PathScreen("save as official JSON", lambda path, _: self.save_to(path), value=value), saved
        )

    def save_to(self, path: Path) -> str | None:
        """Write official JSON (plus `<name>.pose.txt` when a pose string says it exactly); an error or None."""
        try:
            trajectory = self.state.trajectory()
            save_trajectory(trajectory, path)
            pose_path = path.with_suffix(".pose.txt")
            if self.state.document.exact:
                pose_path.write_text(self.state.document.pose_string() + "\n", encoding="utf-8")
        except TrajectoryError as error:
            return error.message
        except OSError as error:
            return f"cannot write {path}: {error.strerror}"
        self.editor.path = path
        self.editor.saved_once = True
        self.state.mark_saved()
        self.state.message = f"saved {path}" + (f" and {pose_path.name}" if self.state.document.exact else "")
        self.sync()
        return None

    def action_submit(self) -> None:
        if self.editor.submitter is None:
            self.notify("submitting is not available here", severity="warning")
            return
        default = self.editor.default_variant
        variant = default if default in CHUNK and CHUNK[default] == self.state.chunk else self.state.model

        def done(job_id: str | None) -> None:
            if job_id:
                self.editor.job_ids.append(job_id)
                self.state.message = f"queued job {job_id}"
                self.sync(force=True)

        self.app.push_screen(SubmitScreen(variant, self.editor.default_engine, self.submit_form), done)

    def submit_form(self, form: SubmitForm) -> Submitted:
        """Run the injected submitter on the current trajectory (called from the submit worker thread)."""
        document = self.state.document
        if document.exact:
            pose = document.pose_string()
        elif self.editor.path is not None and not self.state.dirty:
            pose = str(self.editor.path)
        else:
            pose = None
        return self.editor.submitter(self.state.trajectory(), form, pose)


class EditorApp(App[EditorResult]):
    """`worldplay traj edit`: see the module docstring for what is injected."""

    CSS_PATH = "editor.tcss"
    TITLE = "worldplay traj edit"

    def __init__(
        self,
        state: EditorState,
        *,
        path: Path | None = None,
        reference: np.ndarray | None = None,
        submitter: Submitter | None = None,
        default_variant: str | None = None,
        default_engine: str | None = None,
    ):
        super().__init__()
        self.state = state
        self.path = path
        self.reference = reference
        self.submitter = submitter
        self.default_variant = default_variant
        self.default_engine = default_engine  # None: the submit dialog offers "the settings' default"
        self.saved_once = False
        self.job_ids: list[str] = []

    def get_default_screen(self) -> Screen:
        return EditorScreen(self.state)

    @property
    def editor_screen(self) -> EditorScreen:
        return next(screen for screen in self.screen_stack if isinstance(screen, EditorScreen))

    def get_system_commands(self, screen: Screen) -> Iterable[SystemCommand]:
        yield from super().get_system_commands(screen)
        if not isinstance(screen, EditorScreen):
            return
        for command in COMMANDS:
            if command.palette and command.action != "app.quit":
                keys = command.display or command.keys.replace(",", " ")
                yield SystemCommand(
                    command.title, f"{command.help}  [{keys}]", partial(screen.run_action, command.action)
                )

    def result(self) -> EditorResult:
        state = self.state
        return EditorResult(
            path=self.path,
            saved=self.saved_once,
            num_latents=state.num_latents,
            num_frames=state.validation().num_frames,
            pose=state.document.pose_string() if state.document.exact else None,
            job_ids=list(self.job_ids),
        )

    def finish(self) -> None:
        self.exit(self.result())

    async def action_quit(self) -> None:
        if not self.state.dirty:
            self.finish()
            return

        def choice(answer: str | None) -> None:
            if answer == "save":
                self.editor_screen.action_save(then_quit=True)
            elif answer == "discard":
                self.finish()

        self.push_screen(ConfirmQuitScreen(), choice)
