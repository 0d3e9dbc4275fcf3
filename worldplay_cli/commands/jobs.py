"""`worldplay jobs ...`: list, inspect, follow, cancel, retry and delete jobs; list workers."""

from __future__ import annotations

from typing import Annotated, Optional

import typer

from worldplay_cli.options import ConfigOption, JsonOption, OutputRootOption, RedisUrlOption

jobs_app = typer.Typer(help="Inspect and steer queued, running and finished jobs.", no_args_is_help=True)

JobIds = Annotated[
    list[str],
    typer.Argument(help="Job id(s): the id, a unique prefix, its random part or the job's --name.", show_default=False),
]
JobIdArgument = Annotated[
    str, typer.Argument(help="Job: the id, a unique prefix, its random part or the job's --name.", show_default=False)
]


def register(app: typer.Typer) -> None:
    app.add_typer(jobs_app, name="jobs")


def _runtime(config, redis_url, output_root):
    from worldplay_cli.jobs_index import reap_pending
    from worldplay_cli.runtime import Runtime

    runtime = Runtime(config, redis_url, output_root)
    # Readers detect lost jobs too, so a dead worker is noticed even when no other worker runs.
    if reap_pending(runtime.conn):
        from worldplay_cli.contract.queue import reap

        reap(runtime.conn, runtime.settings, force=True)
    return runtime


def _age(seconds: float | None) -> str:
    if seconds is None:
        return ""
    if seconds < 60:
        return f"{seconds:.0f}s"
    if seconds < 3600:
        return f"{seconds / 60:.0f}m"
    return f"{seconds / 3600:.1f}h"


def _progress_text(row) -> str:
    from worldplay_cli.contract.meta import describe_progress
    from worldplay_cli.jobs import describe_play

    progress = row.progress or {}
    if row.status != "started" or not progress:
        return ""
    if row.kind == "play":
        return describe_play(row.play) or describe_progress(progress)
    text = f"{100 * progress.get('fraction', 0):.0f}% {describe_progress(progress)}".rstrip()
    if progress.get("eta_s") is not None:
        text += f" ETA {_age(progress['eta_s'])}"
    return text


def _what_runs(row) -> str:
    """The engine of a generation, the kind and its engine of a live session, the kind (train, ...) otherwise."""
    if row.kind in (None, "generate"):
        return f"{row.engine}/{row.variant}"
    if row.kind == "play":
        return f"play {row.engine}/{row.variant}"
    return f"{row.kind} {row.variant or ''}"


STATUS_STYLE = {"finished": "green", "failed": "red", "stopped": "yellow", "canceled": "yellow", "started": "cyan"}


@jobs_app.command("list")
def list_command(
    status: Annotated[
        Optional[list[str]],
        typer.Option("--status", "-s", help="Only these statuses (repeatable).", show_default=False),
    ] = None,
    queue: Annotated[Optional[str], typer.Option(help="Only this queue.", show_default=False)] = None,
    search: Annotated[Optional[str], typer.Option(help="Text in the id or description.", show_default=False)] = None,
    batch: Annotated[
        Optional[str], typer.Option(help="Only this batch's jobs (`worldplay batch`).", show_default=False)
    ] = None,
    limit: Annotated[int, typer.Option(help="Page size.", min=1)] = 50,
    offset: Annotated[int, typer.Option(help="Skip this many (newest first).", min=0)] = 0,
    as_json: JsonOption = False,
    config: ConfigOption = None,
    redis_url: RedisUrlOption = None,
    output_root: OutputRootOption = None,
) -> None:
    """Jobs, newest first (by when they were submitted; a retry keeps its place)."""
    from rich.table import Table

    from worldplay_cli import jobs
    from worldplay_cli.output import emit

    if queue is not None:
        from worldplay_cli.contract.settings import check_queue_name

        check_queue_name(queue)
    runtime = _runtime(config, redis_url, output_root)
    if batch is not None:
        from worldplay_cli.batch import batch_page

        page = batch_page(runtime.conn, batch, set(status) if status else None, queue, offset, limit)
    else:
        page = jobs.list_jobs(runtime.conn, set(status) if status else None, queue, search, offset, limit)

    def render(console):
        # Narrow terminals drop the least useful columns; ids are never cut (they are what users type).
        columns = ["id", "status", "time", "prompt"]
        if any(row.status == "started" for row in page.rows):
            columns.insert(2, "progress")
        if console.width >= 100:
            columns.insert(2, "engine")
        if console.width >= 120:
            columns.insert(3, "frames")
        if console.width >= 140:
            columns.insert(-1, "worker")
        table = Table(box=None, header_style="bold")
        for column in columns:
            if column in ("id", "status"):
                cells = [row.id for row in page.rows] if column == "id" else [row.status for row in page.rows]
                table.add_column(column, no_wrap=True, min_width=max(map(len, cells), default=2))
            else:
                table.add_column(column, overflow="ellipsis", no_wrap=True, ratio=1 if column == "prompt" else None)
        for row in page.rows:
            style = STATUS_STYLE.get(row.status, "")
            failure = (row.failure or {}).get("kind", "")
            cells = {
                "id": row.id,
                "status": f"[{style}]{row.status}[/]"
                + (f" ({failure})" if failure and row.status != "finished" else "")
                if style
                else row.status,
                "engine": _what_runs(row),
                "frames": str(row.frames or ""),
                "progress": _progress_text(row),
                "time": _age(row.duration_s),
                "worker": row.worker or "",
                "prompt": row.prompt or "",
            }
            table.add_row(*(cells[column] for column in columns))
        console.print(table)
        counts = ", ".join(f"{n} {s}" for s, n in page.counts.items() if n)
        # Not highlighted: numbers coloured inside a dim line say nothing, and the highlighter's patterns
        # take longer to compile than the rest of the listing takes to print.
        console.print(
            f"[dim]{page.offset + len(page.rows)} of {page.total} shown; all jobs: {counts or 'none'}[/]",
            highlight=False,
        )

    emit(page.to_dict(), as_json, render)


@jobs_app.command("show")
def show_command(
    job_id: JobIdArgument,
    as_json: JsonOption = False,
    config: ConfigOption = None,
    redis_url: RedisUrlOption = None,
    output_root: OutputRootOption = None,
) -> None:
    """Everything about one job: spec, progress, result or failure, files, recent log."""
    from rich.markup import escape

    from worldplay_cli import jobs
    from worldplay_cli.output import emit

    runtime = _runtime(config, redis_url, output_root)
    job_id = jobs.resolve_job_id(runtime.conn, job_id)
    detail = jobs.job_detail(runtime.conn, runtime.settings, job_id)

    def render(console):
        console.print(
            f"[bold]{detail['id']}[/]  {detail['status']}  queue {detail['queue']}  attempt {detail['attempt']}"
        )
        for line in jobs.describe_spec(detail.get("spec")) + jobs.describe_training(detail.get("train")):
            console.print(escape(line), highlight=False, soft_wrap=True)
        if detail.get("play"):
            console.print(f"played: {jobs.describe_play(detail['play'])}", highlight=False)
        if detail.get("progress") and detail["status"] == "started":
            console.print(f"progress: {_progress_text(jobs.get_row(runtime.conn, job_id))}")
        if detail.get("failure"):
            failure = detail["failure"]
            console.print(
                f"[red]{failure['kind']}[/]: {failure['message']}"
                + (f" (hint: {failure['hint']})" if failure.get("hint") else "")
            )
        if detail.get("result") and detail["result"].get("video"):
            console.print(f"video: [bold]{detail['result'].get('video')}[/]")
        console.print(f"output dir: {detail['output_dir']}  files: {', '.join(detail['files']) or '-'}")
        for line in detail["log"]:
            console.print(f"[dim]{escape(line)}[/]")

    emit(detail, as_json, render)


@jobs_app.command("logs")
def logs_command(
    job_id: JobIdArgument,
    follow: Annotated[bool, typer.Option("--follow", "-f", help="Keep printing until the job ends.")] = False,
    lines: Annotated[int, typer.Option("--lines", "-n", help="How many recent lines.", min=0)] = 50,
    config: ConfigOption = None,
    redis_url: RedisUrlOption = None,
    output_root: OutputRootOption = None,
) -> None:
    """A job's log (from Redis; the full log is log.txt in the job directory)."""
    import sys

    from worldplay_cli import jobs

    runtime = _runtime(config, redis_url, output_root)
    job_id = jobs.resolve_job_id(runtime.conn, job_id)
    row = jobs.get_row(runtime.conn, job_id)
    last = "0-0"
    for last, line in jobs.log_tail(runtime.conn, job_id, lines):
        sys.stdout.write(line + "\n")
    sys.stdout.flush()
    while follow and row.status not in jobs.ENDED:
        for last, line in jobs.read_log(runtime.conn, job_id, last, block_ms=1000):
            sys.stdout.write(line + "\n")
        sys.stdout.flush()
        row = jobs.get_row(runtime.conn, job_id)
    if follow:
        for last, line in jobs.read_log(runtime.conn, job_id, last):
            sys.stdout.write(line + "\n")


def _print_results(console, results: list[dict]) -> None:
    for result in results:
        if "error" not in result:
            text = f"{result['job_id']}: {result.get('note') or result.get('status', 'done')}"
            console.print(text, highlight=False, soft_wrap=True)


def _each(runtime, job_ids: list[str], action, as_json: bool) -> None:
    """Apply `action` to every job the user named; report each, exit with the first error's code."""
    from worldplay_cli import jobs
    from worldplay_cli.contract.errors import BadInput
    from worldplay_cli.output import emit

    results: list[dict] = []
    errors = []
    for typed in job_ids:
        try:
            job_id = jobs.resolve_job_id(runtime.conn, typed)
            results.append({"job_id": job_id, **action(job_id)})
        except BadInput as exc:
            errors.append(exc)
            results.append({"job_id": typed, "error": exc.message, "hint": exc.hint})

    def render(console):
        _print_results(console, results)

    emit(results, as_json, render)
    # Errors go to stderr with --json too (one `error: ... (hint: ...)` line per job that failed).
    if errors:
        from worldplay_cli.contract.errors import format_error
        from worldplay_cli.output import err_console

        for result in results:
            if "error" in result:
                err_console.print(
                    format_error(result["error"], result["hint"]), highlight=False, markup=False, soft_wrap=True
                )
    if errors:
        raise typer.Exit(errors[0].exit_code)


BatchOption = Annotated[
    Optional[str], typer.Option("--batch", help="Every job of this batch (`worldplay batch`).", show_default=False)
]
OptionalJobIds = Annotated[
    Optional[list[str]],
    typer.Argument(help="Job id(s): the id, a unique prefix, its random part or the job's --name.", show_default=False),
]


def _named_or_batch(runtime, job_ids: list[str] | None, batch: str | None, statuses: frozenset[str]) -> list[str]:
    """The jobs named, or those of `--batch` in one of `statuses` (the others are left as they are)."""
    from worldplay_cli.contract.errors import BadInput

    if (batch is None) == (not job_ids):
        raise BadInput(
            "name jobs or give --batch ID (one of the two)", "e.g. `worldplay jobs cancel --batch batch-...`"
        )
    if batch is None:
        return job_ids
    from worldplay_cli.batch import batch_jobs_in

    return batch_jobs_in(runtime.conn, batch, statuses)


@jobs_app.command("cancel")
def cancel_command(
    job_ids: OptionalJobIds = None,
    batch: BatchOption = None,
    as_json: JsonOption = False,
    config: ConfigOption = None,
    redis_url: RedisUrlOption = None,
    output_root: OutputRootOption = None,
) -> None:
    """Cancel queued jobs; stop running ones (their whole process tree) and wait until they are gone."""
    from worldplay_cli import jobs
    from worldplay_cli.rows import ACTIVE

    runtime = _runtime(config, redis_url, output_root)
    job_ids = _named_or_batch(runtime, job_ids, batch, ACTIVE)
    _each(runtime, job_ids, lambda job_id: {"status": jobs.cancel_job(runtime.conn, runtime.settings, job_id)}, as_json)


@jobs_app.command("hud")
def hud_command(
    job_id: JobIdArgument,
    as_json: JsonOption = False,
    config: ConfigOption = None,
    redis_url: RedisUrlOption = None,
    output_root: OutputRootOption = None,
) -> None:
    """Add video_hud.mp4 to a finished job: its video with the trajectory's keys drawn on (video.mp4 stays)."""
    from worldplay_cli import jobs
    from worldplay_cli.output import emit

    runtime = _runtime(config, redis_url, output_root)
    job_id = jobs.resolve_job_id(runtime.conn, job_id)
    result = jobs.add_hud(runtime.settings, job_id)
    emit(result, as_json, lambda console: console.print(f"HUD video: [bold]{result['video_hud']}[/]", soft_wrap=True))


@jobs_app.command("retry")
def retry_command(
    job_ids: OptionalJobIds = None,
    batch: BatchOption = None,
    as_json: JsonOption = False,
    config: ConfigOption = None,
    redis_url: RedisUrlOption = None,
    output_root: OutputRootOption = None,
) -> None:
    """Put failed, stopped or canceled jobs back on their queue."""
    from worldplay_cli import jobs

    runtime = _runtime(config, redis_url, output_root)
    if batch is not None and not job_ids:
        from worldplay_cli.batch import retry_batch
        from worldplay_cli.output import emit

        results = retry_batch(runtime.conn, runtime.settings, batch)
        emit(results, as_json, lambda console: _print_results(console, results))
        return
    job_ids = _named_or_batch(runtime, job_ids, batch, frozenset())
    _each(runtime, job_ids, lambda job_id: {"status": jobs.retry_job(runtime.conn, runtime.settings, job_id)}, as_json)


@jobs_app.command("rm")
def rm_command(
    job_ids: JobIds,
    files: Annotated[bool, typer.Option("--files", help="Also delete the job directories.")] = False,
    as_json: JsonOption = False,
    config: ConfigOption = None,
    redis_url: RedisUrlOption = None,
    output_root: OutputRootOption = None,
) -> None:
    """Forget jobs that are not running (and with --files, delete their outputs)."""
    from worldplay_cli import jobs

    runtime = _runtime(config, redis_url, output_root)

    def delete(job_id: str) -> dict:
        result = jobs.delete_job(runtime.conn, runtime.settings, job_id, files)
        if result["files_removed"]:
            note = f"deleted, and its files ({result['output_dir']})"
        elif result["files_kept"]:
            note = f"deleted; its files were kept in {result['output_dir']} (add --files to delete them too)"
        else:
            note = "deleted (it had no files)"
        return {"status": "deleted", "note": note, **result}

    _each(runtime, job_ids, delete, as_json)


@jobs_app.command("workers")
def workers_command(
    as_json: JsonOption = False,
    config: ConfigOption = None,
    redis_url: RedisUrlOption = None,
    output_root: OutputRootOption = None,
) -> None:
    """Registered workers, their GPUs, current job and heartbeat age."""
    from rich.table import Table

    from worldplay_cli import jobs
    from worldplay_cli.output import emit

    runtime = _runtime(config, redis_url, output_root)
    rows = jobs.list_workers(runtime.conn, runtime.settings)

    def render(console):
        table = Table(box=None, header_style="bold")
        for column in ("name", "queues", "gpus", "state", "job", "heartbeat", "done", "failed"):
            table.add_column(column)
        for row in rows:
            beat = _age(row.heartbeat_age_s) + (" [red](stale)[/]" if row.stale else "")
            table.add_row(
                row.name,
                ",".join(row.queues),
                row.gpus or "-",
                row.state,
                row.current_job or "",
                beat,
                str(row.successful_jobs),
                str(row.failed_jobs),
            )
        console.print(table if rows else "no workers")

    emit([row.to_dict() for row in rows], as_json, render)
