"""`worldplay batch FILE`: expand a grid or list of generate options into jobs with one batch id."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from worldplay_cli.options import ConfigOption, JsonOption, OutputRootOption, RedisUrlOption


def register(app: typer.Typer) -> None:
    app.command("batch")(batch_command)


def batch_command(
    file: Annotated[Path, typer.Argument(help="A batch file (YAML or JSON, version: 1).", show_default=False)],
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="Show the jobs and what they cost; enqueue nothing.")
    ] = False,
    queue_name: Annotated[
        Optional[str], typer.Option("--queue-name", metavar="NAME", help="Queue (default: the settings' queue).")
    ] = None,
    as_json: JsonOption = False,
    config: ConfigOption = None,
    redis_url: RedisUrlOption = None,
    output_root: OutputRootOption = None,
) -> None:
    """Submit every job of a batch file (a grid of prompts, images, poses, seeds, variants, engines, ...)."""
    from worldplay_cli.batch import load_batch

    run_batch(load_batch(file), dry_run, queue_name, as_json, config, redis_url, output_root)


def run_batch(batch, dry_run: bool, queue_name, as_json: bool, config, redis_url, output_root) -> None:
    """Plan (validate every job), then show the plan (--dry-run) or enqueue it; `generate --prompts` too."""
    from worldplay_cli.batch import cost, plan, submit_batch
    from worldplay_cli.output import emit, warn
    from worldplay_cli.runtime import Runtime
    from worldplay_cli.submit import queue_warning

    runtime = Runtime(config, redis_url, output_root)  # connects only when the batch is submitted
    planned = plan(batch, runtime.settings)
    if dry_run:
        data = {
            "jobs": [{"options": job.options, "spec": job.prepared.spec.model_dump(mode="json")} for job in planned],
            "eval": batch.eval,
            "cost": cost(planned),
        }
        emit(data, as_json, lambda console: console.print(_plan_table(planned, data["cost"], batch.eval)))
        return
    result = submit_batch(batch, planned, runtime.settings, runtime.conn, queue_name)
    warn(queue_warning(runtime.conn, runtime.settings, queue_name or runtime.settings.queue.default_queue))

    def render(console):
        console.print(result["batch"], highlight=False)
        extra = " (+ an eval job each)" if batch.eval else ""
        console.print(
            f"[dim]{len(result['jobs'])} jobs queued{extra}; see `worldplay jobs list --batch {result['batch']}`[/]",
            highlight=False,
        )

    emit(result, as_json, render)


def _plan_table(planned, totals: dict, with_eval: bool):
    from rich.console import Group
    from rich.table import Table
    from rich.text import Text

    table = Table(box=None, header_style="bold")
    for column in ("#", "engine", "frames", "size", "seed", "pose", "prompt"):
        table.add_column(column, overflow="ellipsis", no_wrap=True, ratio=1 if column == "prompt" else None)
    for index, job in enumerate(planned, 1):
        spec = job.prepared.spec
        table.add_row(
            str(index),
            f"{spec.engine}/{spec.variant}",
            str(spec.frames),
            f"{spec.width}x{spec.height}",
            str(spec.seed),
            spec.trajectory.source,
            spec.prompt,
        )
    lines = [f"{totals['jobs']} jobs, {totals['frames']} frames" + (", an eval job after each" if with_eval else "")]
    for engine, figures in totals["by_engine"].items():
        work = (
            f", {figures['latent_steps']:,} latent-steps on {figures['gpu_jobs']} GPU-jobs"
            if figures["gpu_jobs"]
            else " (CPU)"
        )
        lines.append(f"  {engine}: {figures['jobs']} jobs, {figures['frames']} frames{work}")
    return Group(table, Text("\n".join(lines)))
