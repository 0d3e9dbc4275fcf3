"""Every dashboard command in one table: its keys, its action, and the words the footer, help and palette show.

The key bindings of the jobs screen and the job detail screen, the help screen and the command palette are
all generated from `COMMANDS` (as the editor's are from `worldplay_cli.tui.editor.keymap`), so a command
cannot have a key and be missing from the palette, or the other way round.
"""

from __future__ import annotations

from dataclasses import dataclass

from textual.actions import parse
from textual.binding import Binding


@dataclass(frozen=True)
class Command:
    keys: str  # Textual key names, comma-separated; "" for palette-only commands
    action: str  # an action of the dashboard app, e.g. "job('cancel')"
    title: str  # the footer's and help screen's word for it
    palette: str = ""  # the command palette's title ("" = not in the palette)
    help: str = ""  # the command palette's help line
    footer: bool = True
    # Where the key works: the jobs screen ("jobs"), the job detail screen ("detail"), or both.
    screens: tuple[str, ...] = ("jobs",)

    @property
    def job_verb(self) -> str | None:
        """For a job action (`job('cancel')`): its verb. The palette offers it for the job at hand."""
        _, name, params = parse(self.action)
        return str(params[0]) if name == "job" else None

    @property
    def batch_verb(self) -> str | None:
        """For a batch action (`batch('cancel')`): its verb, on the batch of the job at hand."""
        _, name, params = parse(self.action)
        return str(params[0]) if name == "batch" else None


_BOTH = ("jobs", "detail")

COMMANDS: tuple[Command, ...] = (
    Command("escape,backspace", "app.pop_screen", "Back", screens=("detail",)),
    Command("enter", "open_job", "Detail", "Open job detail", "Show spec, log, timings and outputs", footer=False),
    Command("c", "job('cancel')", "Cancel", "Cancel job", "Cancel a queued job or stop a running one", screens=_BOTH),
    Command(
        "r",
        "job('retry')",
        "Retry",
        "Retry job",
        "Put a failed, stopped or canceled job back on its queue",
        screens=_BOTH,
    ),
    Command(
        "e",
        "job('requeue')",
        "Re-queue…",
        "Re-queue job with edits",
        "Submit a copy of the job with a changed spec",
        screens=_BOTH,
    ),
    Command(
        "x,delete",
        "job('delete')",
        "Delete",
        "Delete job",
        "Forget the job in Redis (its output directory is kept)",
        screens=_BOTH,
    ),
    Command(
        "C",
        "batch('cancel')",
        "Cancel batch",
        "Cancel batch",
        "Cancel every waiting or running job of the batch",
        footer=False,
        screens=_BOTH,
    ),
    Command(
        "R",
        "batch('retry')",
        "Retry batch",
        "Retry batch",
        "Put the batch's failed, stopped and canceled jobs back (an eval job anew after its parent)",
        footer=False,
        screens=_BOTH,
    ),
    Command("n", "submit", "Submit…", "Submit a job", "Prompt, image, trajectory, engine, variant (or a spec file)"),
    Command(
        "p",
        "toggle_suspend",
        "Suspend/resume",
        "Suspend or resume workers",
        "Stop (or restart) workers taking new jobs",
    ),
    Command("slash", "focus_filter", "Filter", "Filter jobs", "Focus the text filter"),
    Command("f", "cycle_status", "Status", "Cycle status filter", "All, queued, started, finished, failed, …"),
    Command("k", "cycle_kind", "Kind", "Cycle kind filter", "All, generate, train", footer=False),
    # The palette sorts by each column instead ("Sort by status", …: `Dashboard.get_system_commands`).
    Command("s", "cycle_sort", "Sort"),
    Command("S", "reverse_sort", "Reverse", footer=False),
    Command(
        "left_square_bracket", "page(-1)", "Prev page", "Previous page", "Show the previous page of jobs", footer=False
    ),
    Command("right_square_bracket", "page(1)", "Next page", "Next page", "Show the next page of jobs", footer=False),
    Command(
        "g",
        "toggle_batches",
        "Batches",
        "Group jobs by batch",
        "Each batch's jobs together under a header with its counts (again to ungroup)",
        footer=False,
    ),
    Command("w", "toggle_workers", "Workers", "Show or hide workers", "Toggle the workers panel", footer=False),
    Command("t", "toggle_timing", "Timing", footer=False),
    Command("question_mark,f1", "help", "Help", "Dashboard help", "Keys and what they do", screens=_BOTH),
    Command("q", "quit", "Quit"),
)

# Job (and batch) verbs that ask before they act.
CONFIRM = frozenset({"cancel", "delete"})


def bindings(screen: str) -> list[Binding]:
    """The key bindings of `screen` ("jobs": the app's, "detail": the job detail screen's)."""
    return [
        # From the detail screen, app-level commands (help) are the app's actions.
        Binding(command.keys, _on(screen, command.action), command.title, show=command.footer)
        for command in COMMANDS
        if command.keys and screen in command.screens
    ]


def _on(screen: str, action: str) -> str:
    job_action = action.startswith(("job(", "batch("))
    if screen == "detail" and not job_action and not action.startswith("app."):
        return "app." + action
    return action


def palette_commands(screen: str) -> list[Command]:
    """The commands the palette offers on `screen` (job actions separately: `job_commands`)."""
    return [
        command
        for command in COMMANDS
        if command.palette and screen in command.screens and command.job_verb is None and command.batch_verb is None
    ]


def job_commands() -> list[Command]:
    return [command for command in COMMANDS if command.job_verb is not None]


def batch_commands() -> list[Command]:
    return [command for command in COMMANDS if command.batch_verb is not None]
