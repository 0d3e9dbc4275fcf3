"""The editor's widgets: map and side view of the path, the latent timeline, the summary panel."""

from __future__ import annotations

from typing import Literal

import numpy as np
from rich.segment import Segment
from rich.style import Style
from rich.text import Text
from textual import events
from textual.strip import Strip
from textual.widget import Widget
from textual.widgets import Static

from trajectories import action_name
from worldplay_cli.tui.editor.canvas import (
    STYLE_NAMES,
    Plot,
    Viewport,
    nearest_latent,
    plot_path,
    scrolled_first_chunk,
    timeline_latent_at,
    timeline_rows,
)
from worldplay_cli.tui.editor.document import frames_of, pitch_degrees, yaw_degrees
from worldplay_cli.tui.editor.messages import LatentClicked
from worldplay_cli.tui.editor.state import EditorState


def grid_strips(chars: np.ndarray, styles: np.ndarray, palette: list[Style]) -> list[Strip]:
    """One Strip per grid row, one Segment per run of equal style (vectorised over the whole grid)."""
    height, width = chars.shape
    texts = np.ascontiguousarray(chars).view(f"<U{width}").ravel().tolist()
    change = np.ones((height, width), dtype=bool)
    change[:, 1:] = styles[:, 1:] != styles[:, :-1]
    strips = []
    for text, row_styles, row_change in zip(texts, styles.tolist(), change):
        starts = np.flatnonzero(row_change).tolist()
        text = text.ljust(width)  # numpy strips trailing spaces from fixed-width strings
        ends = starts[1:] + [width]
        strips.append(Strip([Segment(text[a:b], palette[row_styles[a]]) for a, b in zip(starts, ends)], width))
    return strips


class PathView(Widget):
    """The camera path seen from above (x right, z up the page) or from the side (z right, up is up)."""

    COMPONENT_CLASSES = {f"pathview--{name}" for name in STYLE_NAMES}

    def __init__(self, plane: Literal["top", "side"], *, id: str | None = None):  # noqa: A002
        super().__init__(id=id)
        self.plane = plane
        self.viewport = Viewport()
        self.border_title = "map  x → · z ↑" if plane == "top" else "side  z → · up ↑"
        self._state: EditorState | None = None
        self._plot: Plot | None = None
        self._strips: list[Strip] = []
        self._key: tuple = ()
        self._palette: list[Style] = []
        self._palette_theme: str | None = None

    def show(self, state: EditorState) -> None:
        self._state = state
        self._ensure_plot()
        self.refresh()

    def on_resize(self) -> None:
        self._ensure_plot()

    def _points(self, c2w: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        if self.plane == "top":
            return c2w[:, [0, 2], 3], yaw_degrees(c2w)
        # Seen from the side only the pitch matters: level points right, looking up tilts the arrow up.
        points = np.stack([c2w[:, 2, 3], -c2w[:, 1, 3]], axis=1)
        return points, 90.0 - pitch_degrees(c2w)

    def _ensure_plot(self) -> None:
        state = self._state
        width, height = self.content_size
        if state is None or width < 1 or height < 1:
            self._strips = []
            return
        key = (
            state.version,
            width,
            height,
            self.viewport.zoom,
            self.viewport.pan_u,
            self.viewport.pan_v,
            self.app.theme,
        )
        if key == self._key:
            return
        points, headings = self._points(state.cache.c2w)
        self._plot = plot_path(
            points,
            headings,
            width,
            height,
            chunk=state.chunk,
            cursor=state.cursor,
            selection=state.selection(),
            viewport=self.viewport,
        )
        if self._palette_theme != self.app.theme:
            self._palette = [self.get_component_rich_style(f"pathview--{name}") for name in STYLE_NAMES]
            self._palette_theme = self.app.theme
        palette = self._palette
        self._strips = grid_strips(self._plot.chars, self._plot.styles, palette)
        self.border_subtitle = f"1 col = {self._plot.units_per_column:.3g}"
        self._key = key

    def render_line(self, y: int) -> Strip:
        self._ensure_plot()
        if y < len(self._strips):
            return self._strips[y]
        return Strip.blank(self.content_size.width, self.rich_style)

    def zoom(self, factor: float) -> None:
        self.viewport.zoom = float(np.clip(self.viewport.zoom * factor, 0.05, 200.0))
        self._ensure_plot()
        self.refresh()

    def pan(self, right: int, up: int) -> None:
        """Move the view a quarter of its width (or height) in world units."""
        if self._plot is None:
            return
        width, height = self.content_size
        self.viewport.pan_u += right * 0.25 * width * self._plot.units_per_column
        self.viewport.pan_v += up * 0.25 * height * 2 * self._plot.units_per_column
        self._ensure_plot()
        self.refresh()

    def fit(self) -> None:
        self.viewport.reset()
        self._ensure_plot()
        self.refresh()

    def on_click(self, event: events.Click) -> None:
        self._ensure_plot()
        offset = event.get_content_offset(self)
        if self._plot is None or offset is None:
            return
        latent = nearest_latent(self._plot.cells, offset.x, offset.y)
        if latent is not None:
            self.post_message(LatentClicked(latent))

    def on_mouse_scroll_up(self, event: events.MouseScrollUp) -> None:
        event.stop()
        self.zoom(1.25)

    def on_mouse_scroll_down(self, event: events.MouseScrollDown) -> None:
        event.stop()
        self.zoom(0.8)


class Timeline(Widget, can_focus=True):
    """One two-column cell per latent (movement keys over turn keys), grouped by denoising chunk."""

    COMPONENT_CLASSES = {
        f"timeline--{name}"
        for name in ("header", "separator", "even", "odd", "cursor", "selection", "partial", "missing")
    }

    def __init__(self, *, id: str | None = None):  # noqa: A002
        super().__init__(id=id)
        self.border_title = "timeline"
        self._state: EditorState | None = None
        self._first_chunk = 0
        self._strips: list[Strip] = []
        self._key: tuple = ()

    def show(self, state: EditorState) -> None:
        self._state = state
        self._ensure_rows()
        self.refresh()

    def on_resize(self) -> None:
        self._ensure_rows()

    def _ensure_rows(self) -> None:
        state = self._state
        width = self.content_size.width
        if state is None or width < 1:
            self._strips = []
            return
        key = (state.version, width, self.app.theme)
        if key == self._key:
            return
        self._first_chunk = scrolled_first_chunk(self._first_chunk, state.cursor, state.chunk, width)
        rows = timeline_rows(
            state.cache.actions,
            chunk=state.chunk,
            first_chunk=self._first_chunk,
            width=width,
            cursor=state.cursor,
            selection=state.selection(),
        )
        styles: dict[str, Style] = {}
        for row in rows:
            for _, name in row:
                if name not in styles:
                    styles[name] = self.get_component_rich_style(f"timeline--{name}")
        self._strips = [
            Strip([Segment(text, styles[name]) for text, name in row]).crop_extend(0, width, self.rich_style)
            for row in rows
        ]
        last = min(state.num_latents - 1, (self._first_chunk + len(rows[1]) // (state.chunk + 1)) * state.chunk - 1)
        self.border_subtitle = f"latents {self._first_chunk * state.chunk}–{max(last, 0)} of {state.num_latents}"
        self._key = key

    def render_line(self, y: int) -> Strip:
        self._ensure_rows()
        if y < len(self._strips):
            return self._strips[y]
        return Strip.blank(self.content_size.width, self.rich_style)

    def on_click(self, event: events.Click) -> None:
        offset = event.get_content_offset(self)
        if self._state is None or offset is None:
            return
        latent = timeline_latent_at(
            offset.x, chunk=self._state.chunk, first_chunk=self._first_chunk, num_latents=self._state.num_latents
        )
        if latent is not None:
            self.post_message(LatentClicked(latent))


class Summary(Static):
    """Length and validity (with the fixes), the cursor latent, step sizes and what the next key will do."""

    def show(self, state: EditorState, *, playing: bool = False) -> None:
        report = state.validation()
        text = Text()
        text.append(f"{state.num_latents} latents · {report.num_frames} frames · {state.model} ")
        if report.ok:
            text.append("✓ valid", "bold green")
        else:
            text.append("✗ " + _short_problem(state), "bold red")
            fixes = [
                f"{key} {how} → {state.target_latents(how)}"
                for key, how in (("f", "pad"), ("t", "trim"))
                if state.target_latents(how) is not None
            ]
            text.append("\nfix: " + (" · ".join(fixes) or "change the length by hand"), "yellow")
        c2w = state.cache.c2w[state.cursor : state.cursor + 1]
        first, last = frames_of(state.cursor)
        step = state.document.step(state.cursor)
        name = "start" if step is None else action_name(int(state.cache.actions[state.cursor]))
        text.append(f"\nlatent {state.cursor} ", "bold")
        text.append(name, "bold cyan")
        text.append(f" · frames {first}–{last} · chunk {state.cursor // state.chunk}")
        if step is not None and step.imported:
            text.append(" · imported", "italic")
        text.append(f"\nyaw {yaw_degrees(c2w)[0] + 0.0:+.1f}° pitch {pitch_degrees(c2w)[0] + 0.0:+.1f}°")
        text.append(f" · step {state.translation_step:g} turn {state.rotation_step:g}°", "dim")
        pending = []
        if state.count_text:
            pending.append(f"count {state.count_text}")
        if state.pending:
            pending.append(f"{state.pending}…")
        if state.latched:
            pending.append("latched " + "+".join(sorted(state.latched)))
        if state.selection():
            first_selected, last_selected = state.selection()
            pending.append(f"selected {first_selected}–{last_selected}")
        if state.recording:
            pending.append("● REC")
        if playing:
            pending.append("▶ playing")
        if pending:
            text.append("\n" + " · ".join(pending), "bold magenta")
        if state.message:
            text.append(f"\n{state.message}", "italic")
        self.update(text, layout=False)  # the panel has a fixed size: no layout pass per key press


def _short_problem(state: EditorState) -> str:
    if state.frames is not None and state.validation().num_frames != state.frames:
        return f"--frames {state.frames} needs {(state.frames - 1) // 4 + 1} latents"
    return f"not a multiple of {state.chunk}"
