"""Modal screens of the editor: help, presets, file path prompts, submit form, unsaved-changes guard."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from rich.table import Table
from rich.text import Text
from textual import on, work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Grid, Horizontal, Vertical, VerticalScroll
from textual.screen import ModalScreen
from textual.widgets import Button, Input, Label, OptionList, Select, Static
from textual.widgets.option_list import Option

from trajectories import MODELS, PRESETS
from worldplay_cli.tui.editor.keymap import COMMANDS
from worldplay_cli.tui.editor.messages import SubmitFinished
from worldplay_cli.tui.editor.submit import SubmitForm, Submitted


class HelpScreen(ModalScreen[None]):
    """Every key binding, grouped, generated from the command table."""

    BINDINGS = [Binding("escape,q,question_mark,f1", "dismiss", "Close")]

    def compose(self) -> ComposeResult:
        with VerticalScroll(id="help-body", classes="dialog"):
            yield Static(self._table(), id="help-table")

    def on_mount(self) -> None:
        self.query_one("#help-body").border_title = "keys (esc closes)"

    @staticmethod
    def _table() -> Table:
        table = Table(box=None, show_header=False, expand=True, padding=(0, 1))
        table.add_column("key", style="bold cyan", no_wrap=True, width=7)
        table.add_column("command", style="bold", no_wrap=True, width=20)
        table.add_column("what it does", ratio=1)
        group = None
        for command in COMMANDS:
            if command.action.startswith("digit"):
                continue
            if command.group != group:
                group = command.group
                table.add_row(Text(group, style="bold underline"), "", "")
            keys = command.display or command.keys.replace(",", " ")
            table.add_row(keys, command.title, command.help)
        table.add_row("0-9", "Count", "a number before a key repeats it: 8w, 3x, 2p")
        return table


class PresetScreen(ModalScreen[str | None]):
    """Pick a preset; the editor replaces the path with it (undo brings the old one back)."""

    BINDINGS = [Binding("escape", "dismiss(None)", "Cancel")]

    def compose(self) -> ComposeResult:
        options = [
            Option(
                Text.assemble((preset.name, "bold"), f"  {preset.description}\n", (preset.pose, "dim")), id=preset.name
            )
            for preset in PRESETS.values()
        ]
        with Vertical(classes="dialog", id="preset-dialog"):
            yield OptionList(*options, id="preset-list")

    def on_mount(self) -> None:
        self.query_one("#preset-dialog").border_title = "presets (enter loads, esc cancels)"

    @on(OptionList.OptionSelected)
    def _chosen(self, event: OptionList.OptionSelected) -> None:
        self.dismiss(event.option.id)


class PathScreen(ModalScreen[Path | None]):
    """Ask for a file path; `accept(path, format)` returns an error to show, or None to close."""

    BINDINGS = [Binding("escape", "dismiss(None)", "Cancel")]

    def __init__(
        self, title: str, accept: Callable[[Path, str | None], str | None], *, value: str = "", formats: bool = False
    ):
        super().__init__()
        self._title = title
        self._accept = accept
        self._value = value
        self._formats = formats

    def compose(self) -> ComposeResult:
        with Vertical(classes="dialog", id="path-dialog"):
            yield Input(self._value, placeholder="path/to/trajectory.json", id="path-input")
            if self._formats:
                choices = [
                    (name, name) for name in ("official", "nerfstudio", "csv", "json", "matrices", "matrices:opengl")
                ]
                yield Select(choices, prompt="format: detect from the file", id="path-format")
            yield Label("", id="path-error", classes="error")

    def on_mount(self) -> None:
        self.query_one("#path-dialog").border_title = f"{self._title} (enter accepts, esc cancels)"

    @on(Input.Submitted, "#path-input")
    def _submitted(self, event: Input.Submitted) -> None:
        text = event.value.strip()
        if not text:
            self.query_one("#path-error", Label).update("give a file path")
            return
        fmt = None
        if self._formats:
            select = self.query_one("#path-format", Select)
            fmt = None if select.is_blank() else str(select.value)
        path = Path(text).expanduser()
        error = self._accept(path, fmt)
        if error:
            self.query_one("#path-error", Label).update(error)
        else:
            self.dismiss(path)


class SubmitScreen(ModalScreen[str | None]):
    """Prompt, engine, variant and seed, each labelled; Submit enqueues in a worker thread and shows the
    job id (and, as a notification, that no worker serves the queue when none does)."""

    BINDINGS = [Binding("escape", "close", "Close")]

    def __init__(self, variant: str, engine: str | None, submit: Callable[[SubmitForm], Submitted]):
        super().__init__()
        self._variant = variant
        self._engine = engine
        self._submit = submit
        self._job_id: str | None = None

    def compose(self) -> ComposeResult:
        from worldplay_cli.contract.specs import engine_table

        engines = [(name, name) for name in sorted(engine_table())]
        with Vertical(classes="dialog", id="submit-dialog"):
            with Grid(id="submit-grid"):
                yield Label("prompt")
                yield Input(placeholder="what the world looks like", id="submit-prompt", compact=True)
                yield Label("engine")
                # Without a known default, blank means "the settings' default engine" (resolved on submit).
                yield Select(
                    engines,
                    value=self._engine or Select.NULL,
                    allow_blank=self._engine is None,
                    prompt="settings default",
                    compact=True,
                    id="submit-engine",
                )
                yield Label("variant")
                yield Select(
                    [(model, model) for model in MODELS],
                    value=self._variant,
                    allow_blank=False,
                    compact=True,
                    id="submit-variant",
                )
                yield Label("seed")
                yield Input("1", placeholder="seed", type="integer", id="submit-seed", compact=True)
            with Horizontal(id="submit-buttons"):
                yield Button("Submit", variant="primary", id="submit-go")
                yield Button("Close", id="submit-close")
            yield Label("", id="submit-status")

    def on_mount(self) -> None:
        self.query_one("#submit-dialog").border_title = "submit a generation job"
        self.query_one("#submit-prompt", Input).focus()

    def form(self) -> SubmitForm:
        seed_text = self.query_one("#submit-seed", Input).value.strip()
        engine = self.query_one("#submit-engine", Select)
        return SubmitForm(
            prompt=self.query_one("#submit-prompt", Input).value,
            variant=str(self.query_one("#submit-variant", Select).value),
            seed=int(seed_text) if seed_text else 1,
            engine=None if engine.is_blank() else str(engine.value),
        )

    @on(Button.Pressed, "#submit-go")
    @on(Input.Submitted, "#submit-prompt")
    def _go(self) -> None:
        self.query_one("#submit-go", Button).disabled = True
        self.query_one("#submit-status", Label).update("submitting…")
        self._run(self.form())

    @work(thread=True, exclusive=True, group="submit")
    def _run(self, form: SubmitForm) -> None:
        from trajectories import TrajectoryError
        from worldplay_cli.contract.errors import WorldplayError

        try:
            submitted = self._submit(form)
        except (WorldplayError, TrajectoryError) as error:
            message = error.message + (f" (hint: {error.hint})" if error.hint else "")
            self.post_message(SubmitFinished(None, error=message))
        else:
            self.post_message(SubmitFinished(submitted.job_id, submitted.queue, warning=submitted.warning))

    @on(SubmitFinished)
    def _finished(self, message: SubmitFinished) -> None:
        status = self.query_one("#submit-status", Label)
        self.query_one("#submit-go", Button).disabled = False
        if message.error:
            status.update(Text(message.error, style="bold red"))
            return
        self._job_id = message.job_id
        status.update(Text.assemble("queued job ", (message.job_id, "bold green"), f" on queue {message.queue}"))
        if message.warning:
            self.app.notify(message.warning, severity="warning", timeout=15)

    @on(Button.Pressed, "#submit-close")
    def action_close(self) -> None:
        self.dismiss(self._job_id)


class ConfirmQuitScreen(ModalScreen[str]):
    """Unsaved changes: save and quit, quit anyway, or go back ("save", "discard", "cancel")."""

    BINDINGS = [Binding("escape", "dismiss('cancel')", "Cancel")]

    def compose(self) -> ComposeResult:
        with Vertical(classes="dialog", id="quit-dialog"):
            yield Label("The trajectory has unsaved changes.")
            with Horizontal(id="quit-buttons"):
                yield Button("Save and quit", variant="primary", id="save")
                yield Button("Quit without saving", variant="error", id="discard")
                yield Button("Cancel", id="cancel")

    def on_mount(self) -> None:
        self.query_one("#quit-dialog").border_title = "quit?"
        self.query_one("#cancel", Button).focus()

    @on(Button.Pressed)
    def _pressed(self, event: Button.Pressed) -> None:
        self.dismiss(event.button.id)
