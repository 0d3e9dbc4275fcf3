"""The dashboard's widgets: jobs table, workers table, status line, banner, loss curve, and the cell renderers."""

from __future__ import annotations

import math
import statistics
import time
from dataclasses import dataclass, replace

from rich.table import Table
from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Vertical
from textual.message import Message
from textual.widgets import DataTable, Sparkline, Static

from worldplay_cli.contract.meta import describe_progress
from worldplay_cli.jobs import STATUSES, JobRow, describe_play
from worldplay_cli.jobs_index import duration_s, fraction

STATUS_STYLES = {
    "queued": "cyan",
    "deferred": "cyan dim",
    "scheduled": "cyan dim",
    "started": "bold yellow",
    "finished": "green",
    "failed": "bold red",
    "stopped": "magenta",
    "canceled": "magenta dim",
}


ID_CHARS = 22  # `20261207-101503-9f2c1a`; a job's --name follows as `-rainy-street`


@dataclass(frozen=True)
class JobColumn:
    key: str  # also the sort key
    label: str
    width: int  # what the column gets when the terminal is wide enough
    min_width: int  # narrower than this it is not worth showing
    priority: int  # narrow terminals keep the lowest numbers


# In display order. At 80 columns: id, status, progress, prompt, ETA; every wider terminal adds more.
JOB_COLUMNS = (
    # Never narrower than a whole id; its width follows the longest id shown (`fit_columns`).
    JobColumn("id", "ID", ID_CHARS, ID_CHARS, 0),
    JobColumn("kind", "Kind", 8, 8, 9),
    JobColumn("status", "Status", 9, 9, 1),
    JobColumn("engine", "Engine", 20, 12, 7),
    JobColumn("prompt", "Prompt", 26, 14, 3),
    JobColumn("progress", "Progress", 42, 15, 2),
    JobColumn("eta", "ETA", 7, 7, 4),
    JobColumn("duration", "Duration", 8, 8, 5),
    JobColumn("worker", "Worker", 18, 12, 8),
    JobColumn("created", "Created", 14, 10, 6),
)
_CELL_PADDING = 2  # DataTable pads every cell with one space on each side
# Spare width goes to these first: a few more characters make them whole, where the progress column's
# details (stage, step, chunk) would take all of it.
_GROW_FIRST = ("prompt", "id", "worker", "engine", "created")


def _growth_order(column: JobColumn) -> tuple[int, int]:
    return (0, _GROW_FIRST.index(column.key)) if column.key in _GROW_FIRST else (1, column.priority)


def fit_columns(available: int, longest_id: int = ID_CHARS) -> list[tuple[JobColumn, int]]:
    """The columns (in display order) and their widths for a table `available` cells wide.

    Columns are taken by priority at their minimum width while they fit; what is left widens them up to
    their full width, the short texts first (prompt, id, worker, engine, date) and the progress details
    last. The id is always shown: whole, or with the name suffix of a `--name`d job cut ("…").
    """
    if longest_id > ID_CHARS:
        id_column = replace(JOB_COLUMNS[0], width=longest_id, min_width=ID_CHARS + 1)
        columns = (id_column, *JOB_COLUMNS[1:])
    else:
        columns = JOB_COLUMNS
    widths: dict[str, int] = {}
    used = 0
    for column in sorted(columns, key=lambda column: column.priority):
        cost = column.min_width + _CELL_PADDING
        if used + cost <= available or not widths:
            widths[column.key] = column.min_width
            used += cost
    spare = available - used
    for column in sorted(columns, key=_growth_order):
        if column.key in widths and spare > 0:
            grow = min(spare, column.width - column.min_width)
            widths[column.key] += grow
            spare -= grow
    return [(column, widths[column.key]) for column in columns if column.key in widths]


_BAR_WIDTH = 10


def human_seconds(seconds: float | None) -> str:
    """`42s`, `3m05s`, `2h04m`, `3d02h`; empty for None."""
    if seconds is None:
        return ""
    seconds = int(round(seconds))
    if seconds < 60:
        return f"{seconds}s"
    if seconds < 3600:
        return f"{seconds // 60}m{seconds % 60:02d}s"
    if seconds < 86400:
        return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"
    return f"{seconds // 86400}d{seconds % 86400 // 3600:02d}h"


def created_label(timestamp: float | None, now: float) -> str:
    """Clock time for today's jobs, else the date (in the local time zone)."""
    if timestamp is None:
        return ""
    if now - timestamp < 86400:
        return time.strftime("%H:%M:%S", time.localtime(timestamp))
    return time.strftime("%Y-%m-%d", time.localtime(timestamp))


def progress_text(row: JobRow) -> Text:
    """`█████░░░░░  52% denoise 26/50 · chunk 2/4`, or the failure kind for jobs that failed."""
    if row.status in ("failed", "stopped", "canceled"):
        kind = (row.failure or {}).get("kind") or row.status
        return Text(kind.replace("_", " "), style=STATUS_STYLES.get(row.status, ""))
    if row.status in ("queued", "deferred", "scheduled"):
        return Text("waiting", style="dim")
    if row.kind == "play" and row.status == "started":
        # a live session has no end to measure against: what it played so far
        return Text(describe_play(row.play) or "loading", style="yellow")
    done = fraction(row)
    filled = round(done * _BAR_WIDTH)
    text = Text("█" * filled, style="green" if row.status == "finished" else "yellow")
    text.append("░" * (_BAR_WIDTH - filled), style="dim")
    text.append(f" {done * 100:3.0f}%")
    described = describe_progress(row.progress) if row.status == "started" else ""
    if described:
        stage, _, rest = described.partition(" ")
        text.append(f" {stage}", style="bold")
        if rest:
            text.append(f" {rest}")
    return text


def _clipped(text: str) -> Text:
    # Text, not str: a str cell is read as markup (a prompt with "[" in it would be mangled); the
    # ellipsis shows where a narrow column cut the value.
    return Text(text, no_wrap=True, overflow="ellipsis")


def job_cells(row: JobRow, now: float) -> dict[str, object]:
    eta = (row.progress or {}).get("eta_s") if row.status == "started" else None
    engine = "/".join(part for part in (row.engine, row.variant) if part)
    return {
        "id": _clipped(row.id),
        "kind": row.kind or "",
        "status": Text(row.status, style=STATUS_STYLES.get(row.status, "")),
        "engine": _clipped(engine),
        "prompt": _clipped((row.prompt or "").replace("\n", " ")),
        "progress": progress_text(row),
        "eta": human_seconds(eta),
        "duration": human_seconds(duration_s(row, now)),
        "worker": _clipped(row.worker or ""),
        "created": created_label(row.created_at, now),
    }


# The row key of a batch's header row (job ids never contain ':'); "" is the group of jobs of no batch.
BATCH_ROW = "batch:"


def batch_cells(batch: str, by_status: dict[str, int]) -> dict[str, object]:
    """A batch's header row when the table groups by batch: its id, its jobs, and those by status."""
    counts = Text()
    for status in STATUSES:
        if by_status.get(status):
            if counts:
                counts.append(" · ", style="dim")
            counts.append(f"{by_status[status]} {status}", style=STATUS_STYLES[status])
    cells: dict[str, object] = dict.fromkeys((column.key for column in JOB_COLUMNS), "")
    total = sum(by_status.values())
    cells["id"] = Text(f"▾ {batch or 'no batch'}", style="bold", no_wrap=True, overflow="ellipsis")
    cells["status"] = Text(f"{total} job{'s' if total != 1 else ''}", style="bold")
    cells["progress"] = counts
    return cells


class JobsTable(DataTable):
    """One page of jobs; updated in place cell by cell when the same jobs stay on the page.

    The cursor follows the highlighted job, not its row: when a refresh reorders the page (new jobs above
    it, another sort), the same job stays highlighted, so an action on "the highlighted job" acts on the
    job the user chose. If that job leaves the page, the cursor stays at its row (clamped to the page).
    Grouped by batch, each batch's jobs follow a header row (`batch_cells`); on it no job is highlighted,
    but its batch is.
    """

    BINDINGS = [
        Binding("home", "edge(False)", "First job", show=False),
        Binding("end", "edge(True)", "Last job", show=False),
    ]

    @dataclass
    class SortRequested(Message):
        column: str

    @dataclass
    class EdgeRequested(Message):
        """Home/End: show the first (last) page of the listing; the cursor is already on the edge row."""

        last: bool

    def __init__(self, **kwargs):
        super().__init__(cursor_type="row", zebra_stripes=True, **kwargs)
        self._cells: dict[str, dict[str, object]] = {}
        self._order: list[str] = []  # row keys: job ids, and batch header rows (BATCH_ROW + batch)
        self._batch_of: dict[str, str | None] = {}
        self._sort: tuple[str, bool] = ("created", True)
        self._layout: list[tuple[JobColumn, int]] = []
        # The job to highlight again when rows come back after the page was empty (e.g. a filter
        # that matched nothing was cleared).
        self._last_selected: str | None = None

    def set_sort(self, sort: str, descending: bool) -> None:
        """Put an arrow on the sorted column's header (the rows follow with the next refresh)."""
        if self._sort != (sort, descending):
            self._sort = (sort, descending)
            self._rebuild()

    def on_resize(self) -> None:
        layout = self._layout_for(self._order)
        if layout != self._layout:
            self._layout = layout
            self._rebuild()

    def _layout_for(self, keys: list[str]) -> list[tuple[JobColumn, int]]:
        # A batch header's id is cut to the column, which fits the job ids.
        longest = max((len(key) for key in keys if not key.startswith(BATCH_ROW)), default=ID_CHARS)
        return fit_columns(self.size.width - self.styles.scrollbar_size_vertical, longest)

    @property
    def visible_columns(self) -> list[str]:
        return [column.key for column, _ in self._layout]

    @property
    def selected_key(self) -> str | None:
        if not self._order or self.cursor_row < 0 or self.cursor_row >= len(self._order):
            return None
        return self._order[self.cursor_row]

    @property
    def selected_job_id(self) -> str | None:
        key = self.selected_key
        return None if key is None or key.startswith(BATCH_ROW) else key

    @property
    def selected_batch(self) -> str | None:
        """The batch of the highlighted job, or of the highlighted batch header."""
        key = self.selected_key
        if key is not None and key.startswith(BATCH_ROW):
            return key.removeprefix(BATCH_ROW) or None
        return self._batch_of.get(key) if key is not None else None

    def show(self, rows: list[JobRow], now: float, batches: dict[str, dict[str, int]] | None = None) -> None:
        """Show `rows`; with `batches` (grouped by batch: each batch's jobs by status), a header row above
        each batch's jobs."""
        order: list[str] = []
        cells: dict[str, dict[str, object]] = {}
        for row in rows:
            header = BATCH_ROW + (row.batch or "")
            if batches is not None and header not in cells:
                order.append(header)
                cells[header] = batch_cells(row.batch or "", batches.get(row.batch or "", {}))
            order.append(row.id)
            cells[row.id] = job_cells(row, now)
        self._batch_of = {row.id: row.batch for row in rows}
        if order == self._order:
            for job_id in order:
                old, new = self._cells[job_id], cells[job_id]
                for key in self.visible_columns:
                    if old[key] != new[key]:
                        self.update_cell(job_id, key, new[key])
            self._cells = cells
            return
        self._cells = cells
        self._layout = self._layout_for(order)  # a longer (named) id may widen the id column
        self._rebuild(order)

    def _rebuild(self, order: list[str] | None = None) -> None:
        """Redraw header and rows from the cached cells (in `order`, if given), keeping the highlighted job."""
        selected = self.selected_key or self._last_selected
        position = self.cursor_row
        self.clear(columns=True)
        sort, descending = self._sort
        for column, width in self._layout:
            arrow = (" ▼" if descending else " ▲") if column.key == sort else ""
            self.add_column(column.label + arrow, key=column.key, width=width)
        if order is not None:
            self._order = order
        for job_id in self._order:
            cells = self._cells[job_id]
            self.add_row(*(cells[key] for key in self.visible_columns), key=job_id)
        if self._order:
            row = (
                self._order.index(selected) if selected in self._order else min(max(position, 0), len(self._order) - 1)
            )
            self.move_cursor(row=row, animate=False, scroll=True)
        self._last_selected = self.selected_key or selected

    def action_edge(self, last: bool) -> None:
        if self.row_count:
            self.move_cursor(row=self.row_count - 1 if last else 0, animate=False, scroll=True)
        self.post_message(self.EdgeRequested(last))

    def on_data_table_header_selected(self, event: DataTable.HeaderSelected) -> None:
        event.stop()
        self.post_message(self.SortRequested(str(event.column_key.value)))


class WorkersTable(DataTable):
    def __init__(self, **kwargs):
        super().__init__(cursor_type="row", zebra_stripes=True, **kwargs)
        self._gpu_columns: bool | None = None

    def show(self, workers, nvml: bool) -> None:
        if self._gpu_columns != nvml:
            self.clear(columns=True)
            labels = ["Worker", "Host", "PID", "Queues", "GPUs", "State", "Current job", "Heartbeat", "Done", "Failed"]
            if nvml:
                labels += ["GPU memory", "GPU util"]
            for label in labels:
                self.add_column(label, key=label)
            self._gpu_columns = nvml
        self.clear()
        for view in workers:
            row = view.row
            heartbeat = Text(
                human_seconds(row.heartbeat_age_s) + " ago" if row.heartbeat_age_s is not None else "never",
                style="bold red" if row.stale else "",
            )
            cells = [
                row.name,
                row.hostname or "",
                str(row.pid or ""),
                ",".join(row.queues),
                row.gpus or "cpu",
                Text(row.state, style="yellow" if row.state == "busy" else ""),
                row.current_job or "",
                heartbeat,
                str(row.successful_jobs),
                str(row.failed_jobs),
            ]
            if nvml:
                cells.append(" ".join(f"{gpu.memory_used_mb}/{gpu.memory_total_mb}M" for gpu in view.gpus))
                cells.append(" ".join(f"{gpu.utilization_pct}%" for gpu in view.gpus))
            self.add_row(*cells, key=row.name)


class StatusLine(Static):
    """Counts by status, the active filter, sort and page, and how long the last refresh took."""

    def show(self, snapshot, query, timing: bool) -> None:
        page = snapshot.page
        text = Text()
        for status in STATUSES:
            count = page.counts.get(status, 0)
            style = STATUS_STYLES[status] if count else "dim"
            if query.statuses and status in query.statuses:
                style += " reverse"
            text.append(f" {status} {count:,} ", style=style)
        text.append(" │ ")
        last = min(page.offset + page.limit, page.matched)
        text.append(f"{page.offset + 1 if page.matched else 0}-{last} of {page.matched:,}")
        if page.matched != page.total:
            text.append(f" (filtered from {page.total:,})", style="dim")
        text.append(f" │ sort {query.sort} {'▼' if query.descending else '▲'}")
        if query.kinds:
            text.append(f" │ kind {','.join(sorted(query.kinds))}")
        if query.group_batches:
            text.append(" │ by batch")
        if snapshot.suspended:
            text.append(" │ ")
            text.append("WORKERS SUSPENDED", style="bold black on yellow")
        if timing:
            text.append(f" │ refresh {snapshot.refresh_s * 1000:.0f} ms", style="dim")
        self.update(text)


def _number(value: float | None, pattern: str = ".4g") -> str:
    return "—" if value is None else format(value, pattern)


def is_distillation(train: dict) -> bool:
    """A distillation run reports two losses: the student's (`generator_loss`) beside the critic's (`loss`)."""
    return "generator_loss_history" in train


def train_table(train: dict) -> Table:
    """A train job's step, last loss, learning rate, throughput, last validation scores and checkpoint
    (its ETA is the job's progress ETA, shown in the summary)."""
    table = Table.grid(padding=(0, 2))
    table.add_column(style="bold")
    table.add_column()
    step, max_steps = train.get("step"), train.get("max_steps")
    if step is None:
        table.add_row("step", Text("no step reported yet", style="dim"))
    else:
        share = f" ({step / max_steps:.0%})" if max_steps else ""
        table.add_row("step", f"{step:,} / {max_steps:,}{share}" if max_steps else f"{step:,}")
    if is_distillation(train):
        # `loss` is the critic's (it steps every iteration), `generator_loss` the student's last update
        table.add_row("student loss", _number(train.get("generator_loss")))
        table.add_row("critic loss", _number(train.get("loss")))
        table.add_row("student lr", _number(train.get("lr"), ".3e"))
        table.add_row("critic lr", _number(train.get("critic_lr"), ".3e"))
    else:
        table.add_row("loss", _number(train.get("loss")))
        table.add_row("lr", _number(train.get("lr"), ".3e"))
    samples_per_s = train.get("samples_per_s")
    table.add_row("throughput", "—" if samples_per_s is None else f"{samples_per_s:.2f} samples/s")
    validation = train.get("validation") or {}
    scores = {
        key: value
        for key, value in validation.items()
        if key != "step" and isinstance(value, (int, float)) and not isinstance(value, bool)
    }
    if scores:
        lines = [f"step {validation['step']:,}"] if isinstance(validation.get("step"), int) else []
        table.add_row("validation", "\n".join(lines + [f"{key} {value:.4g}" for key, value in scores.items()]))
    if train.get("checkpoint"):
        table.add_row("checkpoint", str(train["checkpoint"]))
    return table


class LossCurve(Vertical):
    """A train job's loss history: last/min/max above a sparkline of bucket means, first/last step below.

    `points` holds the (step, loss) pairs drawn: the job's `loss_history` without non-finite losses (one
    NaN would flatten the whole curve); the step table above the curve still shows the raw last loss.
    """

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.points: list[tuple[int, float]] = []

    def compose(self) -> ComposeResult:
        yield Static(id="loss-range")
        yield Sparkline([], summary_function=statistics.fmean, id="loss-sparkline")
        yield Static(id="loss-steps")

    def show(self, history: list) -> None:
        self.points = [(int(step), float(loss)) for step, loss in history if loss is not None and math.isfinite(loss)]
        sparkline = self.query_one(Sparkline)
        steps = self.query_one("#loss-steps", Static)
        sparkline.display = steps.display = bool(self.points)
        if not self.points:
            self.query_one("#loss-range", Static).update(Text("no loss reported yet", style="dim"))
            return
        losses = [loss for _, loss in self.points]
        summary = Text()
        for label, value in (("last", losses[-1]), ("min", min(losses)), ("max", max(losses))):
            summary.append(f"{label} ", style="dim")
            summary.append(f"{value:.4g}  ", style="bold" if label == "last" else "")
        self.query_one("#loss-range", Static).update(summary)
        sparkline.data = losses
        axis = Table.grid(expand=True)
        axis.add_column()
        axis.add_column(justify="right")
        axis.add_row(f"step {self.points[0][0]:,}", f"step {self.points[-1][0]:,}")
        steps.update(axis)
