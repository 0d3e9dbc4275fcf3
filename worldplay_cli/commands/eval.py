"""`worldplay eval JOB|VIDEO`: how well a video follows its camera path, stays consistent and holds its quality
(CPU, no model; the metrics are `trajectories.evaluation`, defined in docs/eval.md)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from worldplay_cli.options import (
    ConfigOption,
    JsonOption,
    OutputRootOption,
    QueueNameOption,
    QueueOption,
    RedisUrlOption,
    queued,
)


def register(app: typer.Typer) -> None:
    app.command("eval")(eval_command)


def eval_command(
    target: Annotated[
        Optional[str],
        typer.Argument(
            help="A job (id, unique prefix or --name), a job directory, or a video file.",
            metavar="JOB|VIDEO",
            show_default=False,
        ),
    ] = None,
    trajectory: Annotated[
        Optional[str],
        typer.Option(
            "--trajectory",
            help="The path the video should follow: a file, preset or pose string (default: the job's trajectory.json).",
        ),
    ] = None,
    reference: Annotated[
        Optional[Path], typer.Option("--reference", help="A ground-truth video: PSNR/SSIM against it.")
    ] = None,
    output: Annotated[
        Optional[Path],
        typer.Option(
            "--output", help="Where to write the JSON (default: eval.json in the job directory, else VIDEO.eval.json)."
        ),
    ] = None,
    chunk_latents: Annotated[
        int, typer.Option("--chunk-latents", min=1, help="Latents per rollout chunk, for the drift curve.")
    ] = 4,
    stride: Annotated[
        int, typer.Option("--stride", min=1, help="Frames between the two views of a camera-following step.")
    ] = 8,
    queue: QueueOption = False,
    queue_name: QueueNameOption = None,
    suite: Annotated[
        Optional[str],
        typer.Option(
            "--suite",
            help="A suite file (or 'default', the bundled one): its images x poses per run, generated on the queue with an eval job after each.",
            show_default=False,
        ),
    ] = None,
    compare_batch: Annotated[
        Optional[str],
        typer.Option("--batch", help="Compare the runs of a suite's batch from its eval jobs.", show_default=False),
    ] = None,
    wait: Annotated[bool, typer.Option("--wait", help="With --suite: wait for every eval job, then compare.")] = False,
    as_json: JsonOption = False,
    config: ConfigOption = None,
    redis_url: RedisUrlOption = None,
    output_root: OutputRootOption = None,
) -> None:
    """Score a video: camera following (R_dist/T_dist), revisit consistency, drift and action following.

    With --queue, a worker evaluates job JOB once it has finished (an eval job that fails if JOB fails)."""
    from worldplay_cli.contract.errors import BadInput
    from worldplay_cli.evaluate import evaluate_target
    from worldplay_cli.output import emit

    if suite is not None or compare_batch is not None:
        _suite(suite, compare_batch, wait, output, queue_name, as_json, config, redis_url, output_root)
        return
    if target is None:
        raise BadInput(
            "give a job, a job directory or a video (or --suite FILE, --batch ID)", "see `worldplay eval --help`"
        )
    if queued(queue, queue_name):
        _enqueue(
            target,
            trajectory,
            reference,
            output,
            chunk_latents,
            stride,
            queue_name,
            as_json,
            config,
            redis_url,
            output_root,
        )
        return

    result = evaluate_target(
        target, trajectory, reference, output, chunk_latents, stride, config, redis_url, output_root
    )
    emit(result, as_json, lambda console: console.print(summary_table(result)))


def _enqueue(
    target, trajectory, reference, output, chunk_latents, stride, queue_name, as_json, config, redis_url, output_root
):
    from worldplay_cli import jobs
    from worldplay_cli.contract.errors import BadInput
    from worldplay_cli.evaluate import submit_eval
    from worldplay_cli.output import emit, warn
    from worldplay_cli.runtime import Runtime
    from worldplay_cli.submit import queue_warning

    if trajectory is not None or reference is not None or output is not None:
        raise BadInput(
            "an eval job reads the job's own trajectory and writes its own eval.json",
            "drop --trajectory, --reference and --output, or --queue",
        )
    runtime = Runtime(config, redis_url, output_root)
    target = jobs.resolve_job_id(runtime.conn, target)
    job_id = submit_eval(runtime.conn, runtime.settings, target, queue_name, chunk_latents=chunk_latents, stride=stride)
    warn(queue_warning(runtime.conn, runtime.settings, queue_name or runtime.settings.queue.default_queue))
    emit(
        {"job_id": job_id, "target": target, "status": "queued"},
        as_json,
        lambda console: console.print(job_id, highlight=False),
    )


def _suite(suite, compare_batch, wait, output, queue_name, as_json, config, redis_url, output_root):
    """--suite: submit the suite's batch (and with --wait, compare once every eval job ended); --batch: compare."""
    import json

    from worldplay_cli import jobs
    from worldplay_cli.batch import plan, submit_batch
    from worldplay_cli.output import emit, err_console, warn
    from worldplay_cli.runtime import Runtime
    from worldplay_cli.submit import queue_warning
    from worldplay_cli.suite import batch_comparison, load_suite, suite_batch

    runtime = Runtime(config, redis_url, output_root)
    batch_id = compare_batch
    if suite is not None:
        batch = suite_batch(load_suite(None if suite == "default" else Path(suite)))
        submitted = submit_batch(batch, plan(batch, runtime.settings), runtime.settings, runtime.conn, queue_name)
        batch_id = submitted["batch"]
        warn(queue_warning(runtime.conn, runtime.settings, queue_name or runtime.settings.queue.default_queue))
        if not wait:
            emit(submitted, as_json, lambda console: console.print(batch_id, highlight=False))
            err_console.print(
                f"{len(submitted['jobs'])} videos queued, each with an eval job; compare with "
                f"`worldplay eval --batch {batch_id}` once they have ended",
                highlight=False,
                soft_wrap=True,
            )
            return
        for entry in submitted["jobs"]:
            jobs.wait_for(runtime.conn, entry["eval_job_id"])
    comparison = batch_comparison(runtime.conn, runtime.settings, batch_id)
    if output is not None:
        output.write_text(json.dumps(comparison, indent=2) + "\n")
    emit(comparison, as_json, lambda console: console.print(comparison_table(comparison)))


def comparison_table(comparison: dict):
    from rich.table import Table

    table = Table(title=f"suite {comparison['batch']}", title_justify="left", box=None, header_style="bold")
    columns = {
        "videos": ("scored", None),
        "R_dist": ("R_dist", 2),
        "T_dist": ("T_dist", 1),
        "rev.PSNR": ("revisit_psnr", 1),
        "rev.SSIM": ("revisit_ssim", 3),
        "drift": ("drift", 3),
        "sharp": ("sharpness_ratio", 2),
        "EPE": ("pixel_epe", 3),
    }
    table.add_column("run", no_wrap=True)
    for name in columns:
        table.add_column(name, justify="right", no_wrap=True)
    for run, figures in comparison["runs"].items():
        cells = [f"{figures['scored']}/{figures['videos']}"]
        cells += [_figure(figures[key], digits) for key, digits in list(columns.values())[1:]]
        table.add_row(run, *cells)
    return table


def _figure(value, digits: int = 2, unit: str = "") -> str:
    return "-" if value is None else f"{value:.{digits}f}{unit}"


def summary_table(result: dict):
    """The headline figures of an eval.json as a rich Table (metric, value, how to read it)."""
    from rich.table import Table

    table = Table(title=f"eval of {result.get('video', '')}", title_justify="left")
    table.add_column("metric")
    table.add_column("value", justify="right")
    table.add_column("reading")
    camera = result["camera_following"]
    table.add_row("R_dist", _figure(camera["R_dist"], unit="°"), "mean rotation error per step; lower is better")
    table.add_row(
        "T_dist",
        _figure(camera["T_dist"], 1, "°"),
        f"mean translation-direction error over {camera['translation_steps']} moving steps; 90° = no evidence",
    )
    table.add_row(
        "tracked steps", f"{camera['tracked']}/{camera['steps']}", "untracked: too flat to match, not guessed"
    )
    revisit = result["revisit"]
    if revisit["count"]:
        psnr = "identical" if revisit["psnr"] is None else _figure(revisit["psnr"], 1, " dB")
        table.add_row("revisit PSNR", psnr, f"{revisit['count']} returns to an earlier pose; higher is better")
        table.add_row("revisit SSIM", _figure(revisit["ssim"], 3), "1 = the same view again")
    else:
        table.add_row("revisit", "-", "the path never comes back near an earlier pose")
    drift = result["drift"]
    table.add_row("drift", _figure(drift["drift"], 3), "late chunks' colour histograms vs the first (0 = same)")
    table.add_row("sharpness ratio", _figure(drift["sharpness_ratio"]), "late / first chunk; below 1 = smearing")
    action = result["action_following"]
    if "skipped" in action:
        table.add_row("action following", "-", action["skipped"])
    else:
        table.add_row(
            "action pixel EPE",
            _figure(action["pixel_epe"], 3, " px"),
            f"flow vs the path's flow; the preview's own: {_figure(action['reference_pixel_epe'], 3)} px",
        )
    if result.get("reference"):
        reference = result["reference"]
        psnr = "identical" if reference["psnr"] is None else _figure(reference["psnr"], 1, " dB")
        table.add_row("reference PSNR", psnr, f"against {reference.get('video', 'the reference')}")
        table.add_row("reference SSIM", _figure(reference["ssim"], 3), "1 = identical")
    for note in result.get("notes", []):
        table.add_row("note", "", note)
    return table
