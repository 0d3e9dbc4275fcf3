"""Character pictures of a camera path (top-down and side views) and of the latent timeline.

Pure numpy, no Textual: the widgets turn these grids into styled terminal lines. Every function is
vectorised over latents so a 512-latent path redraws in a millisecond or two.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from trajectories import action_name
from trajectories.plot import heading_arrow

# A terminal cell is about twice as tall as it is wide.
CELL_ASPECT = 2.0
# Paths shorter than this (world units; a step is 0.08) are drawn at this size instead of blown up.
MIN_SPAN = 0.4

# The eight heading arrows, clockwise from up the page, binned like `heading_arrow` (nearest 45 degrees).
_ARROWS = np.array([heading_arrow(45.0 * octant) for octant in range(8)])

# Style ids of plot cells, drawn in this order of priority (a later one covers an earlier one).
EMPTY, PATH, EVEN, ODD, BOUNDARY, START, SELECTION, CURSOR = range(8)
STYLE_NAMES = ("empty", "path", "even", "odd", "boundary", "start", "selection", "cursor")


@dataclass
class Viewport:
    """Zoom (1 = fit the whole path) and pan (world units, added to the fitted centre) of a plot."""

    zoom: float = 1.0
    pan_u: float = 0.0
    pan_v: float = 0.0

    def reset(self) -> None:
        self.zoom, self.pan_u, self.pan_v = 1.0, 0.0, 0.0


@dataclass
class Plot:
    chars: np.ndarray  # (rows, columns) single characters
    styles: np.ndarray  # (rows, columns) style ids
    cells: np.ndarray  # (N, 2) column, row of every latent (may lie outside the grid)
    units_per_column: float


def plot_path(
    points: np.ndarray,
    headings: np.ndarray,
    width: int,
    height: int,
    *,
    chunk: int,
    cursor: int,
    selection: tuple[int, int] | None = None,
    viewport: Viewport | None = None,
) -> Plot:
    """Draw `points` (N,2: right, up the page) with a heading arrow per latent (degrees clockwise from up).

    Latents are coloured by denoising chunk (alternating), chunk-boundary latents stand out, the cursor
    latent is drawn last so it is never hidden.
    """
    viewport = viewport or Viewport()
    width, height = max(width, 1), max(height, 1)
    low, high = points.min(axis=0), points.max(axis=0)
    span = np.maximum(high - low, MIN_SPAN)
    columns_per_unit = min((width - 1) / span[0], CELL_ASPECT * (height - 1) / span[1]) * viewport.zoom
    columns_per_unit = max(columns_per_unit, 1e-9)
    centre = (low + high) / 2 + np.array([viewport.pan_u, viewport.pan_v])
    cells = np.empty((len(points), 2))
    cells[:, 0] = (width - 1) / 2 + (points[:, 0] - centre[0]) * columns_per_unit
    cells[:, 1] = (height - 1) / 2 - (points[:, 1] - centre[1]) * columns_per_unit / CELL_ASPECT

    chars = np.full((height, width), " ", dtype="<U1")
    styles = np.zeros((height, width), dtype=np.int8)

    def put(where: np.ndarray, char, style: int) -> None:
        column = np.rint(where[:, 0]).astype(np.int64)
        row = np.rint(where[:, 1]).astype(np.int64)
        inside = (column >= 0) & (column < width) & (row >= 0) & (row < height)
        chars[row[inside], column[inside]] = char if np.isscalar(char) else np.asarray(char)[inside]
        styles[row[inside], column[inside]] = style

    # 1. The path between latents, densified to about one sample per cell so it reads as a line.
    if len(points) > 1:
        delta = np.diff(cells, axis=0)
        samples = np.clip(np.ceil(np.abs(delta).max(axis=1)), 1, width + height).astype(np.int64)
        segment = np.repeat(np.arange(len(delta)), samples)
        fraction = (np.arange(samples.sum()) - np.repeat(np.cumsum(samples) - samples, samples)) / np.repeat(
            samples, samples
        )
        put(cells[segment] + delta[segment] * fraction[:, None], "·", PATH)

    # 2. One heading marker per latent, styled by chunk; then start, selection and cursor on top.
    latents = np.arange(len(points))
    arrows = _ARROWS[np.rint(np.mod(headings, 360.0) / 45.0).astype(np.int64) % 8]
    chunk_style = np.where((latents // chunk) % 2 == 0, EVEN, ODD)
    chunk_style = np.where(latents % chunk == 0, BOUNDARY, chunk_style)
    for style in (EVEN, ODD, BOUNDARY):
        mask = chunk_style == style
        put(cells[mask], arrows[mask], style)
    put(cells[:1], "o", START)
    if selection is not None:
        first, last = selection
        put(cells[first : last + 1], arrows[first : last + 1], SELECTION)
    put(cells[cursor : cursor + 1], arrows[cursor : cursor + 1], CURSOR)
    return Plot(chars, styles, cells, 1.0 / columns_per_unit)


def nearest_latent(cells: np.ndarray, column: int, row: int, reach: float = 2.5) -> int | None:
    """The latent drawn closest to a clicked cell (rows count double: cells are tall), None if none is near."""
    distance = np.hypot(cells[:, 0] - column, (cells[:, 1] - row) * CELL_ASPECT)
    best = int(np.argmin(distance))
    return best if distance[best] <= reach else None


# Timeline ---------------------------------------------------------------------------------------

CELL_WIDTH = 2


def _action_glyphs(action_id: int) -> tuple[str, str]:
    parts = [] if action_id == 0 else action_name(action_id).split("+")
    keys = "".join(part for part in parts if part in "WASD") or "·"
    turns = "".join(part for part in parts if part not in "WASD")
    return keys.ljust(CELL_WIDTH), turns.ljust(CELL_WIDTH)


# (keys row, turns row) for each of the 81 action ids: "W ", "WD" and "→ ", "→↑".
GLYPHS = tuple(_action_glyphs(action_id) for action_id in range(81))


def chunk_columns(chunk: int) -> int:
    """Columns one chunk takes in the timeline: a separator, then two per latent."""
    return 1 + CELL_WIDTH * chunk


def visible_chunks(width: int, chunk: int) -> int:
    return max(1, width // chunk_columns(chunk))


def scrolled_first_chunk(first_chunk: int, cursor: int, chunk: int, width: int) -> int:
    """Scroll the timeline the least amount that keeps the cursor's chunk visible."""
    cursor_chunk = cursor // chunk
    shown = visible_chunks(width, chunk)
    if cursor_chunk < first_chunk:
        return cursor_chunk
    if cursor_chunk >= first_chunk + shown:
        return cursor_chunk - shown + 1
    return first_chunk


def timeline_rows(
    actions: np.ndarray,
    *,
    chunk: int,
    first_chunk: int,
    width: int,
    cursor: int,
    selection: tuple[int, int] | None,
) -> list[list[tuple[str, str]]]:
    """Three rows of (text, style name) runs: chunk start latents, movement keys, turn keys.

    Latents of an incomplete last chunk (an invalid length) are styled "partial", the slots still
    missing in it "missing", so the fix to make is visible where it applies.
    """
    num_latents = len(actions)
    complete = (num_latents // chunk) * chunk
    rows: list[list[tuple[str, str]]] = [[], [], []]
    columns = 0
    block = first_chunk
    while columns + chunk_columns(chunk) <= max(width, chunk_columns(chunk)) and block * chunk < max(num_latents, 1):
        start = block * chunk
        rows[0].append((f"│{start}".ljust(chunk_columns(chunk))[: chunk_columns(chunk)], "header"))
        rows[1].append(("│", "separator"))
        rows[2].append(("│", "separator"))
        for latent in range(start, start + chunk):
            if latent >= num_latents:
                style = "missing"
                keys = turns = " " * CELL_WIDTH
            else:
                keys, turns = ("○ ", "  ") if latent == 0 else GLYPHS[int(actions[latent])]
                if latent == cursor:
                    style = "cursor"
                elif selection is not None and selection[0] <= latent <= selection[1]:
                    style = "selection"
                elif latent >= complete:
                    style = "partial"
                else:
                    style = "even" if block % 2 == 0 else "odd"
            rows[1].append((keys, style))
            rows[2].append((turns, style))
        columns += chunk_columns(chunk)
        block += 1
    return rows


def timeline_latent_at(column: int, *, chunk: int, first_chunk: int, num_latents: int) -> int | None:
    """The latent under a clicked timeline column (a separator selects its chunk's first latent)."""
    block, offset = divmod(max(column, 0), chunk_columns(chunk))
    latent = (first_chunk + block) * chunk + max(offset - 1, 0) // CELL_WIDTH
    return latent if latent < num_latents else None
