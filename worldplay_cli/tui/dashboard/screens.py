"""Screens over the jobs table: job detail (with a live log), confirmations, forms, help."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from rich.json import JSON
from rich.table import Table
from rich.text import Text
from textual import on, work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Grid, Horizontal, Vertical, VerticalScroll
from textual.message import Message
from textual.screen import ModalScreen, Screen
from textual.widgets import Button, Footer, Input, Label, Markdown, RichLog, Select, Static

from worldplay_cli.jobs import ENDED
from worldplay_cli.jobs_index import duration_s
from worldplay_cli.tui.dashboard import keymap
from worldplay_cli.tui.dashboard.source import (
    EDITABLE_FIELDS,
    JobDetail,
    LogChunk,
    SourceUnavailable,
    SubmitChoices,
    describe_error,
)
from worldplay_cli.tui.dashboard.widgets import (
    STATUS_STYLES,
    LossCurve,
    human_seconds,
    is_distillation,
    progress_text,
    train_table,
)
from worldplay_cli.tui.widgets import HalfBlockImage, image_size_for

if TYPE_CHECKING:
    from PIL import Image

    from worldplay_cli.submit import GenerateRequest, Submitted

_FAILURE_NAMES = {
    "oom": "out of memory",
    "timeout": "timeout",
    "worker_lost": "worker lost",
    "bad_input": "bad input",
    "engine_error": "engine error",
    "canceled": "canceled",
    "refused": "refused",
    "internal": "internal error",
    "parent_failed": "parent failed",
}


def _when(timestamp: float | None) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(timestamp)) if timestamp else "—"


def summary_table(detail: JobDetail, now: float) -> Table:
    row = detail.row
    table = Table.grid(padding=(0, 2))
    table.add_column(style="bold")
    table.add_column()
    progress = row.progress or {}
    table.add_row("status", Text(row.status, style=STATUS_STYLES.get(row.status, "")))
    table.add_row("kind", row.kind or "")
    table.add_row("engine", "/".join(part for part in (row.engine, row.variant) if part))
    table.add_row("queue", row.queue or "")
    table.add_row("worker", row.worker or "—")
    table.add_row("attempt", str(row.attempt))
    table.add_row("progress", progress_text(row))
    if row.status == "started":
        table.add_row("ETA", human_seconds(progress.get("eta_s")) or "—")
    table.add_row("created", _when(row.created_at))
    table.add_row("started", _when(row.started_at))
    table.add_row("ended", _when(row.ended_at) if row.status in ENDED else "—")
    table.add_row("duration", human_seconds(duration_s(row, now)) or "—")
    if row.frames:
        table.add_row("frames", f"{row.frames} ({row.width}x{row.height})")
    if row.batch:
        table.add_row("batch", row.batch)
    if row.depends_on:
        table.add_row("after", ", ".join(row.depends_on))
    return table


def chain_table(detail: JobDetail) -> Table | None:
    """The job's pipeline, top to bottom: the jobs it runs after, itself, the jobs that run after it, each
    with its kind and status; None for a job with neither."""
    if not detail.parents and not detail.children:
        return None
    table = Table.grid(padding=(0, 2))
    for _ in range(4):
        table.add_column()
    marked = [("after", row) for row in detail.parents] + [("this", detail.row)]
    marked += [("then", row) for row in detail.children]
    for mark, row in marked:
        table.add_row(
            Text(mark, style="dim" if mark != "this" else "bold"),
            Text(row.id, style="bold" if mark == "this" else ""),
            row.kind or "",
            Text(row.status, style=STATUS_STYLES.get(row.status, "")),
        )
    return table


def failure_text(detail: JobDetail) -> Text | None:
    failure = detail.row.failure
    if not failure and not detail.error:
        return None
    text = Text()
    if failure:
        text.append(_FAILURE_NAMES.get(failure.get("kind"), failure.get("kind") or "failed"), style="bold red")
        text.append(f": {failure.get('message', '')}\n")
        if failure.get("hint"):
            text.append("hint: ", style="bold")
            text.append(failure["hint"] + "\n")
    elif detail.error:
        text.append("error\n", style="bold red")
        text.append(detail.error.strip().splitlines()[-1])
    return text


def timings_table(detail: JobDetail) -> Table | Text:
    if not detail.stage_timings:
        return Text("no stage timings yet", style="dim")
    table = Table.grid(padding=(0, 2))
    table.add_column(style="bold")
    table.add_column(justify="right")
    for stage, seconds in detail.stage_timings.items():
        table.add_row(stage, f"{seconds:.2f} s")
    return table


def outputs_text(detail: JobDetail) -> Text:
    text = Text()
    text.append(f"{detail.output_dir or '—'}\n", style="bold")
    for name in detail.files:
        text.append(f"  {name}\n")
    return text


class JobDetailScreen(Screen):
    """Everything about one job; the summary refreshes and the log follows while the screen is open."""

    BINDINGS = keymap.bindings("detail")

    @dataclass
    class Loaded(Message):
        detail: JobDetail | None  # None: the job does not exist (any more)
        log: LogChunk | None  # new log lines since the last poll (None on the first load)
        error: str | None = None  # the source was unreachable; nothing else is set

    @dataclass
    class FrameLoaded(Message):
        image: Image.Image | None

    def __init__(self, job_id: str, refresh_s: float = 1.0):
        super().__init__()
        self.job_id = job_id
        self.refresh_s = refresh_s
        self.detail: JobDetail | None = None
        self._cursor: str | None = None
        self._busy = False
        self._frame_requested = False

    def compose(self) -> ComposeResult:
        yield Static(Text(f"job {self.job_id}", style="bold"), id="detail-title")
        with Horizontal(id="detail-top"):
            with VerticalScroll(id="detail-left"):
                yield Static(id="detail-summary")
                yield Label("chain", id="detail-chain-label", classes="section")
                yield Static(id="detail-chain")
                yield Static(id="detail-failure")
                yield Label("stages", classes="section")
                yield Static(id="detail-timings")
                yield Label("outputs", classes="section")
                yield Static(id="detail-outputs")
                yield Label("spec", classes="section")
                yield Static(id="detail-spec")
            with Vertical(id="detail-right"):
                with Vertical(id="detail-train"):  # shown for train jobs instead of trajectory and frame
                    yield Label("training", classes="section")
                    yield Static(id="detail-train-stats")
                    yield Label("loss", id="detail-loss-label", classes="section")
                    yield LossCurve(id="detail-loss")
                    # distillation: the student's loss beside the critic's (the one above)
                    yield Label("student loss", classes="section distill-only")
                    yield LossCurve(id="detail-student-loss", classes="distill-only")
                yield Label("trajectory (top-down)", classes="section generate-only")
                yield Static(id="detail-plot", classes="generate-only")
                yield Label("first frame", classes="section generate-only")
                yield Static(id="detail-frame-note", classes="generate-only")
                yield HalfBlockImage(id="detail-frame", classes="generate-only")
        yield Label("log", classes="section")
        yield RichLog(id="detail-log", wrap=False, highlight=False, max_lines=5000)
        yield Footer()

    def on_mount(self) -> None:
        self.load()
        self.set_interval(self.refresh_s, self.load)

    def load(self) -> None:
        if self._busy:
            return
        self._busy = True
        self._load()

    @work(thread=True, group="detail", exit_on_error=False)
    def _load(self) -> None:
        source = self.app.source
        try:
            log = None if self._cursor is None else source.read_log(self.job_id, self._cursor)
            self.post_message(self.Loaded(source.job_detail(self.job_id), log))
        except SourceUnavailable as exc:
            self.post_message(self.Loaded(None, None, str(exc)))

    @on(Loaded)
    def _show(self, message: Loaded) -> None:
        self._busy = False
        if message.error is not None:
            self.app.source_lost(message.error)
            return
        self.app.source_back()
        if message.log is not None:
            if message.log.lines:
                self.query_one(RichLog).write(Text("\n".join(message.log.lines)))
            self._cursor = message.log.cursor
        detail = message.detail
        if detail is None:
            self.query_one("#detail-summary", Static).update(Text("this job no longer exists", style="bold red"))
            return
        first = self.detail is None
        self.detail = detail
        now = self.app.source.now()
        self.query_one("#detail-summary", Static).update(summary_table(detail, now))
        chain = chain_table(detail)
        for widget in self.query("#detail-chain-label, #detail-chain"):
            widget.display = chain is not None
        self.query_one("#detail-chain", Static).update(chain or "")
        failure = failure_text(detail)
        failure_widget = self.query_one("#detail-failure", Static)
        failure_widget.display = failure is not None
        failure_widget.update(failure or "")
        self.query_one("#detail-timings", Static).update(timings_table(detail))
        self.query_one("#detail-outputs", Static).update(outputs_text(detail))
        is_train = detail.row.kind == "train"
        if is_train:
            train = detail.train or {}
            self.query_one("#detail-train-stats", Static).update(train_table(train))
            self.query_one("#detail-loss", LossCurve).show(train.get("loss_history") or [])
            distillation = is_distillation(train)
            self.query_one("#detail-loss-label", Label).update("critic loss" if distillation else "loss")
            for widget in self.query(".distill-only"):
                widget.display = distillation
            if distillation:
                self.query_one("#detail-student-loss", LossCurve).show(train["generator_loss_history"])
        if first:
            self.query_one("#detail-train").display = is_train
            for widget in self.query(".generate-only"):
                widget.display = not is_train
            spec = JSON(json.dumps(detail.spec, indent=2)) if detail.spec else Text("spec not readable", style="dim")
            self.query_one("#detail-spec", Static).update(spec)
            plot = (
                "\n".join(detail.trajectory_plot) if detail.trajectory_plot else Text("no trajectory file", style="dim")
            )
            self.query_one("#detail-plot", Static).update(plot)
            if detail.log.lines:
                self.query_one(RichLog).write(Text("\n".join(detail.log.lines)))
            self._cursor = detail.log.cursor
        note = self.query_one("#detail-frame-note", Static)
        if detail.video and not self._frame_requested:
            self._frame_requested = True
            note.update(Text("decoding…", style="dim"))
            self._load_frame(detail.video)
        elif not self._frame_requested:
            note.update(Text("shown when the job has finished", style="dim"))

    @work(thread=True, group="frame", exit_on_error=False)
    def _load_frame(self, video: str) -> None:
        self.post_message(self.FrameLoaded(self.app.source.first_frame(video)))

    @on(FrameLoaded)
    def _show_frame(self, message: FrameLoaded) -> None:
        import numpy as np
        from PIL import Image

        note = self.query_one("#detail-frame-note", Static)
        if message.image is None:
            note.update(Text("could not decode the video", style="dim"))
            return
        frame = self.query_one("#detail-frame", HalfBlockImage)
        image = message.image
        width, height = image_size_for(image.width / image.height, frame.size.width, frame.size.height)
        if width == 0:
            note.update(Text("no room to draw the frame", style="dim"))
            return
        note.update(Text(f"{image.width}x{image.height} (scaled)", style="dim"))
        frame.set_image(np.asarray(image.convert("RGB").resize((width, height), Image.Resampling.BILINEAR)))

    def action_job(self, verb: str) -> None:
        self.app.job_action(verb, self.job_id)

    @property
    def batch(self) -> str | None:
        return self.detail.row.batch if self.detail else None

    def action_batch(self, verb: str) -> None:
        if self.batch is None:
            self.app.notify("this job is in no batch", severity="warning")
            return
        self.app.batch_action(verb, self.batch)


class ConfirmScreen(ModalScreen[bool]):
    BINDINGS = [Binding("y", "answer(True)", "Yes"), Binding("n,escape", "answer(False)", "No")]

    def __init__(self, question: str):
        super().__init__()
        self.question = question

    def compose(self) -> ComposeResult:
        with Vertical(id="dialog"):
            yield Label(self.question, id="question")
            with Horizontal(classes="buttons"):
                yield Button("Yes (y)", variant="error", id="yes")
                yield Button("No (n)", variant="primary", id="no")

    def on_mount(self) -> None:
        self.query_one("#no", Button).focus()

    def action_answer(self, answer: bool) -> None:
        self.dismiss(answer)

    @on(Button.Pressed)
    def _pressed(self, event: Button.Pressed) -> None:
        self.dismiss(event.button.id == "yes")


_INT_FIELDS = {"seed", "steps", "timeout_s"}
_FLOAT_FIELDS = {"guidance"}


class RequeueScreen(ModalScreen[tuple[dict[str, Any], str | None] | None]):
    """Edit a copy of a job's spec; dismisses with (changed fields, queue or None)."""

    BINDINGS = [Binding("escape", "dismiss_none", "Cancel"), Binding("ctrl+s", "submit", "Re-queue")]

    def __init__(self, job_id: str, spec: dict, queue: str | None):
        super().__init__()
        self.job_id = job_id
        self.spec = spec
        self.queue = queue

    def compose(self) -> ComposeResult:
        with Vertical(id="dialog", classes="form"):
            yield Label(f"re-queue {self.job_id} with edits (inputs are copied)", id="question")
            with Grid(id="form-grid"):
                for name in EDITABLE_FIELDS:
                    value = self.spec.get(name)
                    yield Label(name)
                    yield Input("" if value is None else str(value), id=f"field-{name}", compact=True)
                yield Label("queue")
                yield Input(self.queue or "", id="field-queue", compact=True)
            with Horizontal(classes="buttons"):
                yield Button("Re-queue (ctrl+s)", variant="primary", id="submit")
                yield Button("Cancel (esc)", id="cancel")

    def changes(self) -> dict[str, Any]:
        """Fields whose text differs from the original, converted to the spec's types."""
        from worldplay_cli.contract.errors import BadInput

        changes: dict[str, Any] = {}
        for name in EDITABLE_FIELDS:
            text = self.query_one(f"#field-{name}", Input).value.strip()
            original = self.spec.get(name)
            if text == ("" if original is None else str(original)):
                continue
            try:
                if name in _INT_FIELDS:
                    value: Any = int(text)
                elif name in _FLOAT_FIELDS:
                    value = float(text)
                else:
                    value = text or (None if name == "output_name" else "")
            except ValueError:
                raise BadInput(f"{name}: {text!r} is not a number") from None
            changes[name] = value
        return changes

    def action_submit(self) -> None:
        from worldplay_cli.contract.errors import BadInput

        try:
            changes = self.changes()
        except BadInput as exc:
            self.notify(exc.message, severity="error")
            return
        queue = self.query_one("#field-queue", Input).value.strip()
        self.dismiss((changes, queue if queue and queue != self.queue else None))

    def action_dismiss_none(self) -> None:
        self.dismiss(None)

    @on(Button.Pressed, "#submit")
    def _submit(self) -> None:
        self.action_submit()

    @on(Button.Pressed, "#cancel")
    def _cancel(self) -> None:
        self.dismiss(None)


class SubmitScreen(ModalScreen["Submitted | None"]):
    """Submit a generation job: a form (prompt, image, trajectory, engine, variant, seed, queue), or a spec
    file. Submitting runs in a worker; a bad input shows its one-line error here and enqueues nothing.
    Dismisses with the `Submitted` job, or None when closed."""

    BINDINGS = [Binding("escape", "dismiss_none", "Cancel"), Binding("ctrl+s", "submit", "Submit")]

    @dataclass
    class Finished(Message):
        submitted: Submitted | None
        error: str | None = None

    def __init__(self, choices: SubmitChoices):
        super().__init__()
        self.choices = choices

    def compose(self) -> ComposeResult:
        from worldplay_cli.assets import EXAMPLE_IMAGES
        from worldplay_cli.submit import DEFAULT_POSE

        choices = self.choices
        examples = ", ".join(EXAMPLE_IMAGES)
        with Vertical(id="dialog", classes="form"):
            yield Label("submit a generation job", id="question")
            with Grid(id="form-grid"):
                yield Label("prompt")
                yield Input(placeholder="what the world looks like", id="submit-prompt", compact=True)
                yield Label("image")
                yield Input(
                    placeholder=f"path or example: {examples} (default meadow)", id="submit-image", compact=True
                )
                yield Label("trajectory")
                yield Input(
                    DEFAULT_POSE, placeholder="pose string (w-31), preset name or file", id="submit-pose", compact=True
                )
                yield Label("engine")
                yield Select(
                    [(name, name) for name in choices.engines],
                    value=choices.engine,
                    allow_blank=False,
                    compact=True,
                    id="submit-engine",
                )
                yield Label("variant")
                yield Select(
                    [(name, name) for name in choices.variants],
                    value=choices.variant,
                    allow_blank=False,
                    compact=True,
                    id="submit-variant",
                )
                yield Label("seed")
                yield Input("1", type="integer", id="submit-seed", compact=True)
                yield Label("queue")
                yield Input(choices.queue, id="submit-queue", compact=True)
            yield Label("or a spec file (JSON, TOML or YAML; enter submits it)", classes="section")
            yield Input(placeholder="path/to/request.json", id="path", compact=True)
            yield Static(
                Text('fields: prompt, image, pose, engine, variant, frames, seed, steps, ... and "queue"', style="dim")
            )
            yield Label("", id="submit-error")
            with Horizontal(classes="buttons"):
                yield Button("Submit (ctrl+s)", variant="primary", id="submit")
                yield Button("Cancel (esc)", id="cancel")

    def on_mount(self) -> None:
        self.query_one("#submit-prompt", Input).focus()

    def request(self) -> tuple[GenerateRequest, str | None]:
        """The form as a `GenerateRequest` and its queue; BadInput for a seed that is not a number."""
        from worldplay_cli.contract.errors import BadInput
        from worldplay_cli.submit import GenerateRequest

        def text(name: str) -> str:
            return self.query_one(f"#submit-{name}", Input).value.strip()

        try:
            seed = int(text("seed") or "1")
        except ValueError:
            raise BadInput(f"seed: {text('seed')!r} is not a whole number") from None
        request = GenerateRequest(
            prompt=self.query_one("#submit-prompt", Input).value,
            image=Path(text("image")) if text("image") else None,  # prepare() also resolves example names
            pose=text("pose"),
            engine=str(self.query_one("#submit-engine", Select).value),
            variant=str(self.query_one("#submit-variant", Select).value),
            seed=seed,
        )
        return request, text("queue") or None

    def action_submit(self) -> None:
        from worldplay_cli.contract.errors import BadInput

        try:
            request, queue = self.request()
        except BadInput as exc:
            self._show_error(exc.message)
            return
        source = self.app.source
        self._start(lambda: source.submit_request(request, queue))

    @on(Input.Submitted)
    def _entered(self, event: Input.Submitted) -> None:
        if event.input.id != "path":
            self.action_submit()
            return
        text = event.value.strip()
        if not text:
            self._show_error("give the path of a spec file")
            return
        source = self.app.source
        self._start(lambda: source.submit_file(Path(text)))

    def _start(self, call: Callable[[], Submitted]) -> None:
        self.query_one("#submit", Button).disabled = True
        self.query_one("#submit-error", Label).update(Text("submitting…", style="dim"))
        self._run(call)

    @work(thread=True, exclusive=True, group="submit", exit_on_error=False)
    def _run(self, call: Callable[[], Submitted]) -> None:
        from trajectories import TrajectoryError

        try:
            self.post_message(self.Finished(call()))
        except TrajectoryError as exc:
            self.post_message(self.Finished(None, exc.message + (f" (hint: {exc.hint})" if exc.hint else "")))
        except SourceUnavailable as exc:
            self.post_message(self.Finished(None, f"Redis unreachable: {exc}"))
        except Exception as exc:  # still one visible line in the form, never a silent thread death
            self.post_message(self.Finished(None, describe_error(exc)))

    @on(Finished)
    def _finished(self, message: Finished) -> None:
        self.query_one("#submit", Button).disabled = False
        if message.error is not None:
            self._show_error(message.error)
            return
        self.dismiss(message.submitted)

    def _show_error(self, error: str) -> None:
        self.query_one("#submit-error", Label).update(Text(error, style="bold red"))

    def action_dismiss_none(self) -> None:
        self.dismiss(None)

    @on(Button.Pressed, "#submit")
    def _submit_pressed(self) -> None:
        self.action_submit()

    @on(Button.Pressed, "#cancel")
    def _cancel_pressed(self) -> None:
        self.dismiss(None)


class HelpScreen(ModalScreen[None]):
    BINDINGS = [Binding("escape,q,question_mark,f1", "close", "Close")]

    def __init__(self, markdown: str):
        super().__init__()
        self.markdown = markdown

    def compose(self) -> ComposeResult:
        with VerticalScroll(id="help"):
            yield Markdown(self.markdown)

    def action_close(self) -> None:
        self.dismiss(None)


def keys_markdown(sections: list[tuple[str, list[Binding]]]) -> str:
    lines = ["# worldplay dashboard", ""]
    for title, bindings in sections:
        lines += [f"## {title}", "", "| key | action |", "|---|---|"]
        for binding in bindings:
            keys = ", ".join(f"`{key.strip()}`" for key in binding.key.split(","))
            lines.append(f"| {keys} | {binding.description} |")
        lines.append("")
    lines += [
        "Every action is also in the command palette (`ctrl+p`). Cancel and delete ask first.",
        "Click a column header to sort by it; click it again to reverse.",
        "",
        "Failure kinds: out of memory, timeout, worker lost, bad input, engine error, canceled, refused.",
    ]
    return "\n".join(lines)
