"""The player app: a live session (or a replay) around an injected client.

`PlayerApp(source=PlayClient(...) | ReplayClient(...), graphics="halfblock")`. The client does the work
(`worldplay_cli.tui.player.client`); the app only forwards key presses, shows what the display clock says
is due, and reports how the session ended. Two thread workers talk to Redis (one reads the worker's
messages, one sends ours), so a slow network never blocks a key press or a frame.

Keys: W/A/S/D move, arrows turn, combinations allowed, space holds still, p changes the prompt, r starts or
stops a recorded stretch (markers in the timeline), q ends the session (a second q leaves at once).
A replay has space for pause and q.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

from rich.text import Text
from textual import on, work
from textual.app import App, ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical
from textual.message import Message
from textual.widgets import Footer, Input, Static
from textual.worker import get_current_worker

from worldplay_cli.contract.play import Chunk, Ended, Failed, Ready
from worldplay_cli.tui.player.client import PlayClient, ReplayClient, WorkerLost
from worldplay_cli.tui.player.widgets import KeysHud, video_widget

# The display timer runs faster than any video fps, so a frame is late by at most this much.
TICK_S = 1 / 60
STATUS_EVERY_S = 0.25


@dataclass(frozen=True)
class PlayResult:
    """How the player ended, for the command to print."""

    job_id: str
    status: str  # ended | failed | lost | left | replayed
    output_dir: str
    chunks: int = 0
    frames: int = 0
    reason: str = ""
    message: str = ""
    hint: str | None = None


def _seconds(value: float | None) -> str:
    return "–" if value is None else f"{value:.2f} s"


class PlayerApp(App[PlayResult]):
    CSS_PATH = "player.tcss"
    TITLE = "worldplay play"
    ENABLE_COMMAND_PALETTE = False
    AUTO_FOCUS = None  # keys go to the game, not to the (hidden) prompt input

    BINDINGS = [
        Binding("q", "end_session", "end"),
        Binding("p", "edit_prompt", "prompt"),
        Binding("r", "toggle_recording", "record"),
        Binding("space", "hold", "hold still / pause"),
    ]

    @dataclass
    class FromWorker(Message):
        event: Ready | Chunk | Ended | Failed | WorkerLost

    def __init__(self, source: PlayClient | ReplayClient, graphics: str = "halfblock", queue: str = ""):
        super().__init__()
        self.source = source
        self.graphics = graphics
        self.queue = queue
        self.outcome: Ended | Failed | WorkerLost | None = None
        self._last_status = 0.0
        self._quit_asked = False

    def compose(self) -> ComposeResult:
        # Kept as attributes: the display timer uses them on every frame, and may fire once more at exit.
        self.video = video_widget(self.graphics)
        self.hud = KeysHud(id="hud")
        self.figures_view = Static(id="figures")
        self.prompt_view = Static(id="prompt")
        self.prompt_input = Input(
            id="prompt-input", placeholder="new prompt (enter applies it from the next chunk, esc cancels)"
        )
        self.message = Static(id="message")
        with Horizontal(id="main"):
            yield self.video
            with Vertical(id="side"):
                yield self.hud
                yield self.figures_view
        yield self.prompt_view
        yield self.prompt_input
        yield self.message
        yield Footer()

    def on_mount(self) -> None:
        self.sub_title = f"{'live' if self.source.live else 'replay'} · {self.source.job_id}"
        self.hud.border_title = "keys"
        self.figures_view.border_title = "session"
        self.video.border_title = "video"
        self._read()
        if self.source.live:
            self._send()
        self.set_interval(TICK_S, self._tick)
        self._show_status(force=True)

    # --- talking to the worker (thread workers) ----------------------------------------------------------

    @work(thread=True, group="reader", exit_on_error=False)
    def _read(self) -> None:
        worker = get_current_worker()
        while not worker.is_cancelled:
            try:
                events = self.source.pump(0.25)
            except Exception as error:  # Redis went away: the session cannot go on, and must say why
                self.post_message(self.FromWorker(WorkerLost(f"lost the connection to Redis: {error}")))
                return
            for event in events:
                self.post_message(self.FromWorker(event))

    @work(thread=True, group="sender", exit_on_error=False)
    def _send(self) -> None:
        worker = get_current_worker()
        while not worker.is_cancelled:
            try:
                self.source.flush(0.25)
            except Exception as error:
                self.post_message(self.FromWorker(WorkerLost(f"lost the connection to Redis: {error}")))
                return

    @on(FromWorker)
    def _from_worker(self, message: FromWorker) -> None:
        event = message.event
        if isinstance(event, Ready):
            self._say(
                f"{event.engine}/{event.variant} ready (loaded in {event.load_s:.1f} s); play with W/A/S/D and arrows"
            )
        elif isinstance(event, Ended | Failed | WorkerLost) and self.outcome is None:
            self.outcome = event
            if isinstance(event, Ended) and self._quit_asked:
                self.exit(self.result())
                return
            self._say(self._describe_outcome(event) + " · q leaves", error=not isinstance(event, Ended))
        self._show_status(force=True)

    def _describe_outcome(self, event: Ended | Failed | WorkerLost) -> str:
        where = self.source.output_dir
        if isinstance(event, Ended):
            return f"session ended ({event.reason}): {event.chunks} chunks, {event.frames} frames; outputs in {where}"
        hint = f" ({event.hint})" if event.hint else ""
        kept = f"; outputs up to the last complete chunk in {where}" if where else ""
        return f"{event.message}{hint}{kept}"

    # --- display -------------------------------------------------------------------------------------------

    def _tick(self) -> None:
        shown = self.source.tick()
        if shown is not None:
            self.video.show(shown.image)
            if shown.marker:
                self._say(f"marker: {shown.marker}")
        if shown is not None or time.monotonic() - self._last_status > STATUS_EVERY_S:
            self._show_status(force=shown is None)
        if not self.source.live and self.source.finished and not self.source.buffered() and self.outcome is None:
            self.outcome = Ended(reason="quit", chunks=len(self.source.timeline.chunks), frames=self.source.frames_shown,
                                 output_dir=self.source.output_dir)  # fmt: skip
            self._say(f"end of the replay; outputs in {self.source.output_dir} · q leaves")

    def _show_status(self, force: bool = False) -> None:
        now = time.monotonic()
        if not force and now - self._last_status < STATUS_EVERY_S:
            return
        self._last_status = now
        source = self.source
        current = source.current
        held = source.held() if source.live else []
        self.hud.show(held, current.actions if current is not None else None)
        figures = source.figures()
        lines = [
            f"chunk  {current.chunk if current else '–'} / {figures.chunks}",
            f"frame  {current.frame if current else '–'}",
            f"fps    {figures.fps:.0f}" if figures.fps else "fps    –",
            f"gen    {_seconds(figures.generate_s)}",
        ]
        if source.live:
            lines += [
                f"key→frame p50 {_seconds(figures.latency_p50_s)}",
                f"          p95 {_seconds(figures.latency_p95_s)}",
                f"buffer {figures.buffered} frames",
                f"asked  {figures.asked_ahead} ahead",
                f"stalls {figures.stalls} · skipped {figures.skipped}",
            ]
            if source.ready is None and self.outcome is None:
                queue = f" on queue {self.queue}" if self.queue else ""
                lines.append(f"waiting for a worker{queue}: {source.waited_s():.0f} s")
            if source.recording:
                lines.append("● recording")
        elif source.paused:
            lines.append("paused")
        self.figures_view.update("\n".join(lines))
        prompt = Text("prompt ", style="bold")
        prompt.append(current.prompt if current is not None else source.prompt)
        if source.live and source.pending_prompt is not None:
            prompt.append(f"   → from the next chunk: {source.pending_prompt}", style="italic")
        self.prompt_view.update(prompt)

    def _say(self, text: str, error: bool = False) -> None:
        self.message.update(text)
        self.message.set_class(error, "-error")

    # --- keys ----------------------------------------------------------------------------------------------

    def on_key(self, event) -> None:
        if self.focused is self.prompt_input:
            if event.key == "escape":
                self._close_prompt()
                event.stop()
            return
        if self.source.live and self.source.press(event.key):
            event.stop()
            self._show_status(force=True)

    def action_hold(self) -> None:
        if self.source.live:
            self.source.press("space")
        else:
            self.source.toggle_pause()
        self._show_status(force=True)

    def action_edit_prompt(self) -> None:
        if not self.source.live or self.outcome is not None:
            self._say("the prompt changes only in a live session")
            return
        self.prompt_input.value = ""
        self.prompt_input.add_class("-open")
        self.prompt_input.focus()

    @on(Input.Submitted, "#prompt-input")
    def _prompt_submitted(self, event: Input.Submitted) -> None:
        refused = self.source.set_prompt(event.value)
        self._say(refused or "new prompt sent; it applies from the next chunk", error=refused is not None)
        self._close_prompt()
        self._show_status(force=True)

    def _close_prompt(self) -> None:
        self.prompt_input.remove_class("-open")
        self.set_focus(None)

    def action_toggle_recording(self) -> None:
        if not self.source.live or self.outcome is not None:
            return
        recording = self.source.toggle_recording()
        self._say("recording: a marker starts the stretch at the next chunk" if recording else "recording stopped")
        self._show_status(force=True)

    def action_end_session(self) -> None:
        # a session no worker has taken yet has nothing to write: leave (the command cancels its job)
        if self.outcome is not None or not self.source.live or self._quit_asked or self.source.ready is None:
            self.exit(self.result())
            return
        self._quit_asked = True
        self.source.end()
        self._say("ending the session: the worker writes the outputs… (q again leaves now)")

    def result(self) -> PlayResult:
        source, outcome = self.source, self.outcome
        common = {"job_id": source.job_id, "output_dir": source.output_dir}
        if not source.live:
            return PlayResult(status="replayed", frames=source.frames_shown, **common)
        if isinstance(outcome, Ended):
            return PlayResult(status="ended", chunks=outcome.chunks, frames=outcome.frames, reason=outcome.reason,
                              message=outcome.message, **common)  # fmt: skip
        if isinstance(outcome, Failed):
            return PlayResult(status="failed", chunks=outcome.chunks, message=outcome.message, hint=outcome.hint,
                              **common)  # fmt: skip
        if isinstance(outcome, WorkerLost):
            return PlayResult(status="lost", message=outcome.message, hint=outcome.hint, **common)
        if source.ready is None:
            return PlayResult(status="left", message="left before a worker took the session", **common)
        return PlayResult(status="left", chunks=source.figures().chunks, message="left before the session ended",
                          **common)  # fmt: skip
