"""`worldplay dashboard`: watch and steer jobs and workers.

The app is built around a `DashboardSource`. Every read and action runs in a Textual thread worker and
reports back with a message, so a slow or vanished Redis never blocks a key press. The jobs table shows
one page of the sorted, filtered listing; refreshes are incremental (see `worldplay_cli.jobs_index`).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, replace

from textual import on, work
from textual.actions import parse as parse_action
from textual.app import App, ComposeResult, SystemCommand
from textual.message import Message
from textual.screen import Screen
from textual.widgets import DataTable, Footer, Header, Input, Static

from worldplay_cli.jobs import STATUSES
from worldplay_cli.jobs_index import JobQuery
from worldplay_cli.submit import Submitted
from worldplay_cli.tui.dashboard import keymap
from worldplay_cli.tui.dashboard.screens import (
    ConfirmScreen,
    HelpScreen,
    JobDetailScreen,
    RequeueScreen,
    SubmitScreen,
    keys_markdown,
)
from worldplay_cli.tui.dashboard.source import DashboardSource, Snapshot, SourceUnavailable, describe_error
from worldplay_cli.tui.dashboard.widgets import JOB_COLUMNS, JobsTable, StatusLine, WorkersTable

# Columns that read best biggest-first when first sorted by.
_DESCENDING_FIRST = {"created", "duration", "progress", "eta"}
_STATUS_CYCLE: tuple[frozenset[str], ...] = (frozenset(),) + tuple(frozenset({status}) for status in STATUSES)


class Dashboard(App):
    CSS_PATH = "dashboard.tcss"
    TITLE = "worldplay dashboard"

    BINDINGS = keymap.bindings("jobs")

    @dataclass
    class Refreshed(Message):
        snapshot: Snapshot
        query: JobQuery

    @dataclass
    class SourceLost(Message):
        error: str

    @dataclass
    class ActionDone(Message):
        text: str
        ok: bool

    def __init__(self, source: DashboardSource, refresh_s: float = 1.0, page_size: int = 100):
        super().__init__()
        self.source = source
        self.refresh_s = refresh_s
        self.job_query = JobQuery(limit=page_size)
        self.snapshot: Snapshot | None = None
        self.lost_since: float | None = None
        self.show_timing = False
        self._refreshing = False
        self._refresh_again = False

    def compose(self) -> ComposeResult:
        # Kept as attributes: refreshes land while other screens (detail, dialogs) are on top.
        self.banner = Static(id="banner")
        self.filter_input = Input(
            placeholder="filter: id, prompt, engine, worker, failure… (/ to focus, esc to leave)", id="filter"
        )
        self.status_line = StatusLine(id="status")
        self.jobs_table = JobsTable(id="jobs")
        self.workers_table = WorkersTable(id="workers")
        yield Header()
        yield self.banner
        yield self.filter_input
        yield self.status_line
        yield self.jobs_table
        yield self.workers_table
        yield Footer()

    def on_mount(self) -> None:
        self.sub_title = self.source.location
        self.jobs_table.set_sort(self.job_query.sort, self.job_query.descending)
        self.jobs_table.focus()
        self.request_refresh()
        self.set_interval(self.refresh_s, self.request_refresh)

    # --- refresh ------------------------------------------------------------------------------------

    def request_refresh(self) -> None:
        """Start a refresh unless one is running (then run one more as soon as it ends)."""
        if self._refreshing:
            self._refresh_again = True
            return
        self._refreshing = True
        self._refresh(self.job_query)

    @work(thread=True, group="refresh", exit_on_error=False)
    def _refresh(self, query: JobQuery) -> None:
        try:
            self.post_message(self.Refreshed(self.source.snapshot(query), query))
        except SourceUnavailable as exc:
            self.post_message(self.SourceLost(str(exc)))
        except Exception as exc:  # e.g. a Redis error reply: show it and keep refreshing, never stall
            self.post_message(self.SourceLost(describe_error(exc)))

    @on(Refreshed)
    def _show(self, message: Refreshed) -> None:
        self._refreshing = False
        self.source_back()
        snapshot = message.snapshot
        self.snapshot = snapshot
        page = snapshot.page
        if page.offset != self.job_query.offset and message.query == self.job_query:
            # The page we asked for no longer exists (jobs were removed): stay on the last one.
            self.job_query = replace(self.job_query, offset=page.offset)
        self.jobs_table.show(page.rows, snapshot.now, page.batches if message.query.group_batches else None)
        self.workers_table.show(snapshot.workers, snapshot.nvml)
        self.status_line.show(snapshot, message.query, self.show_timing)
        if self._refresh_again or message.query != self.job_query:
            self._refresh_again = False
            self.request_refresh()

    @on(SourceLost)
    def _lost(self, message: SourceLost) -> None:
        self._refreshing = False
        self._refresh_again = False
        self.source_lost(message.error)

    def source_lost(self, error: str) -> None:
        """Show the banner; the refresh timer keeps trying, and the first answer hides it."""
        if self.lost_since is None:
            self.lost_since = time.time()
            self.notify(f"lost Redis: {error}", severity="error")
        since = time.strftime("%H:%M:%S", time.localtime(self.lost_since))
        self.banner.update(
            f"Redis unreachable at {self.source.location} since {since}: {error}. "
            f"Reconnecting every {self.refresh_s:g} s…"
        )
        self.banner.add_class("-visible")

    def source_back(self) -> None:
        if self.lost_since is None:
            return
        self.lost_since = None
        self.banner.remove_class("-visible")
        self.notify("reconnected to Redis")

    # --- listing: filter, sort, page ----------------------------------------------------------------

    def set_query(self, **changes) -> None:
        self.job_query = replace(self.job_query, **changes)
        self.jobs_table.set_sort(self.job_query.sort, self.job_query.descending)
        self.request_refresh()

    @on(Input.Changed, "#filter")
    def _filter_changed(self, event: Input.Changed) -> None:
        self.set_query(text=event.value, offset=0)

    @on(Input.Submitted, "#filter")
    def _filter_done(self) -> None:
        self.jobs_table.focus()

    def on_key(self, event) -> None:
        if event.key == "escape" and self.focused is self.filter_input:
            self.jobs_table.focus()
            event.stop()

    def action_focus_filter(self) -> None:
        self.filter_input.focus()

    def action_cycle_status(self) -> None:
        position = _STATUS_CYCLE.index(self.job_query.statuses) if self.job_query.statuses in _STATUS_CYCLE else 0
        self.set_query(statuses=_STATUS_CYCLE[(position + 1) % len(_STATUS_CYCLE)], offset=0)

    def action_cycle_kind(self) -> None:
        kinds = [frozenset()] + [frozenset({kind}) for kind in (self.snapshot.page.kinds if self.snapshot else [])]
        position = kinds.index(self.job_query.kinds) if self.job_query.kinds in kinds else 0
        self.set_query(kinds=kinds[(position + 1) % len(kinds)], offset=0)

    def sort_by(self, column: str) -> None:
        if column == self.job_query.sort:
            self.set_query(descending=not self.job_query.descending)
        else:
            self.set_query(sort=column, descending=column in _DESCENDING_FIRST)

    @on(JobsTable.SortRequested)
    def _header_clicked(self, message: JobsTable.SortRequested) -> None:
        self.sort_by(message.column)

    def action_cycle_sort(self) -> None:
        columns = [column.key for column in JOB_COLUMNS]
        self.sort_by(columns[(columns.index(self.job_query.sort) + 1) % len(columns)])

    def action_reverse_sort(self) -> None:
        self.set_query(descending=not self.job_query.descending)

    def _last_page_offset(self) -> int:
        matched = self.snapshot.page.matched if self.snapshot else 0
        return max(0, (matched - 1) // self.job_query.limit * self.job_query.limit)

    def action_page(self, step: int) -> None:
        offset = self.job_query.offset + step * self.job_query.limit
        self.set_query(offset=min(max(0, offset), self._last_page_offset()))

    @on(JobsTable.EdgeRequested)
    def _edge_requested(self, message: JobsTable.EdgeRequested) -> None:
        # The table has put its cursor on its first (last) row; on another page it lands on that page's
        # first (last) row too, as the job it was on is not there.
        offset = self._last_page_offset() if message.last else 0
        if offset != self.job_query.offset:
            self.set_query(offset=offset)

    def action_toggle_batches(self) -> None:
        self.set_query(group_batches=not self.job_query.group_batches, offset=0)

    def action_toggle_workers(self) -> None:
        workers = self.workers_table
        workers.display = not workers.display

    def action_toggle_timing(self) -> None:
        """Show how long each refresh takes (Redis round trips, sorting and filtering included)."""
        self.show_timing = not self.show_timing
        self.request_refresh()

    # --- jobs ---------------------------------------------------------------------------------------

    @property
    def selected_job_id(self) -> str | None:
        return self.jobs_table.selected_job_id

    @on(DataTable.RowSelected, "#jobs")
    def _row_selected(self, event: DataTable.RowSelected) -> None:
        if self.selected_job_id == event.row_key.value:  # not a batch's header row
            self.open_job(str(event.row_key.value))

    def action_open_job(self) -> None:
        if self.selected_job_id:
            self.open_job(self.selected_job_id)

    def open_job(self, job_id: str) -> None:
        self.push_screen(JobDetailScreen(job_id, self.refresh_s))

    def action_job(self, verb: str) -> None:
        job_id = self.selected_job_id
        if job_id is None:
            self.notify("no job selected", severity="warning")
            return
        self.job_action(verb, job_id)

    def job_action(self, verb: str, job_id: str) -> None:
        """Run `verb` on a job: ask first if it is destructive, open the form for a re-queue."""
        source = self.source
        if verb == "requeue":
            self._requeue(job_id)
            return
        call: Callable[[], str] = {
            "cancel": lambda: source.cancel(job_id),
            "retry": lambda: source.retry(job_id),
            "delete": lambda: source.delete(job_id),
        }[verb]
        self.run_confirmed(verb, f"{verb.capitalize()} job {job_id}?", call)

    def action_batch(self, verb: str) -> None:
        batch = self.jobs_table.selected_batch
        if batch is None:
            self.notify("the highlighted job is in no batch", severity="warning")
            return
        self.batch_action(verb, batch)

    def batch_action(self, verb: str, batch: str) -> None:
        """Cancel or retry every job of `batch` the verb applies to (asking first to cancel)."""
        call: Callable[[], str] = {
            "cancel": lambda: self.source.cancel_batch(batch),
            "retry": lambda: self.source.retry_batch(batch),
        }[verb]
        self.run_confirmed(verb, f"{verb.capitalize()} every job of batch {batch}?", call)

    def run_confirmed(self, verb: str, question: str, call: Callable[[], str]) -> None:
        """Run `call`, after a yes to `question` when `verb` is destructive."""
        if verb not in keymap.CONFIRM:
            self.run_source_call(call)
            return

        def answered(yes: bool | None) -> None:
            if yes:
                self.run_source_call(call)

        self.push_screen(ConfirmScreen(question), answered)

    @work(thread=True, group="fetch-spec", exit_on_error=False)
    def _requeue(self, job_id: str) -> None:
        try:
            detail = self.source.job_detail(job_id)
        except SourceUnavailable as exc:
            self.post_message(self.SourceLost(str(exc)))
            return
        if detail is None or not detail.spec:
            self.post_message(self.ActionDone(f"{job_id}: no readable spec to re-queue", False))
            return
        self.call_from_thread(self._open_requeue_form, job_id, detail.spec, detail.row.queue)

    def _open_requeue_form(self, job_id: str, spec: dict, queue: str | None) -> None:
        def submit(result) -> None:
            if result is not None:
                changes, new_queue = result
                self.run_source_call(lambda: self.source.requeue(job_id, changes, new_queue))

        self.push_screen(RequeueScreen(job_id, spec, queue), submit)

    def action_submit(self) -> None:
        def submitted(job: Submitted | None) -> None:
            if job is None:
                return
            self.notify(f"submitted {job.job_id} on queue {job.queue}", timeout=6)
            if job.warning:
                self.notify(job.warning, severity="warning", timeout=15)
            self.request_refresh()

        self.push_screen(SubmitScreen(self.source.submit_choices()), submitted)

    def action_toggle_suspend(self) -> None:
        suspend = not (self.snapshot.suspended if self.snapshot else False)
        self.run_source_call(lambda: self.source.set_suspended(suspend))

    @work(thread=True, group="actions", exit_on_error=False)
    def run_source_call(self, call: Callable[[], str]) -> None:
        try:
            self.post_message(self.ActionDone(call(), True))
        except SourceUnavailable as exc:
            self.post_message(self.SourceLost(str(exc)))
        except Exception as exc:  # anything else still ends as one visible line, never a silent thread death
            self.post_message(self.ActionDone(describe_error(exc), False))

    @on(ActionDone)
    def _action_done(self, message: ActionDone) -> None:
        self.notify(message.text, severity="information" if message.ok else "error", timeout=6)
        self.request_refresh()

    # --- help and command palette -------------------------------------------------------------------

    def action_help(self) -> None:
        sections = [("jobs and workers", self.BINDINGS + JobsTable.BINDINGS), ("job detail", JobDetailScreen.BINDINGS)]
        self.push_screen(HelpScreen(keys_markdown(sections)))

    def get_system_commands(self, screen: Screen) -> Iterable[SystemCommand]:
        yield from super().get_system_commands(screen)
        on_detail = isinstance(screen, JobDetailScreen)
        job_id = screen.job_id if on_detail else self.selected_job_id
        if job_id:
            for command in keymap.job_commands():
                yield SystemCommand(
                    f"{command.palette} {job_id}", command.help, self._palette_job_action(command.job_verb, job_id)
                )
        batch = screen.batch if on_detail else self.jobs_table.selected_batch
        if batch:
            for command in keymap.batch_commands():
                yield SystemCommand(
                    f"{command.palette} {batch}", command.help, self._palette_batch_action(command.batch_verb, batch)
                )
        for command in keymap.palette_commands("detail" if on_detail else "jobs"):
            yield SystemCommand(command.palette, command.help, self._palette_action(command.action))
        if not on_detail:
            for column in JOB_COLUMNS:
                yield SystemCommand(
                    f"Sort by {column.label.lower()}",
                    "Sort the jobs table (again to reverse)",
                    self._palette_sort(column.key),
                )

    def _palette_action(self, action: str) -> Callable[[], None]:
        _, name, params = parse_action(action)
        return lambda: getattr(self, f"action_{name}")(*params)

    def _palette_job_action(self, verb: str, job_id: str) -> Callable[[], None]:
        return lambda: self.job_action(verb, job_id)

    def _palette_batch_action(self, verb: str, batch: str) -> Callable[[], None]:
        return lambda: self.batch_action(verb, batch)

    def _palette_sort(self, key: str) -> Callable[[], None]:
        return lambda: self.sort_by(key)


def run_dashboard(source: DashboardSource, refresh_s: float = 1.0) -> None:
    Dashboard(source, refresh_s=refresh_s).run()
