"""`worldplay generate`: make a video now (foreground), or put the job on a queue for workers."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated, Optional

import typer

from worldplay_cli.contract import variants
from worldplay_cli.options import (
    AttentionBackendOption,
    CompileOption,
    ConfigOption,
    JsonOption,
    LocalWindowLatentsOption,
    OutputRootOption,
    QueueNameOption,
    QueueOption,
    RedisUrlOption,
    RewriteOption,
    RewriteRequiredOption,
    SinkLatentsOption,
    WeightsOption,
    queued,
    rewrite_policy,
)

HELP = """Generate a video from an image and a camera trajectory.

Runs in the foreground with a progress bar (a worker process is started for the job), or with
[bold]--queue[/] puts the job on the default queue (setting queue.default_queue; [bold]--queue-name NAME[/]
for another) served by `worldplay worker` and prints its id ([bold]--wait[/] follows it to the end).
[bold]--rewrite[/] rewrites the prompt first (best effort); [bold]--rewrite-required[/] fails when it cannot.
[bold]--sr[/] adds the 720p super-resolution stage (native and official engines; [bold]--keep-pre-sr[/] keeps
the 480p video too); [bold]--hud[/] also writes the video with the trajectory's keys drawn on.
Every input is checked before anything is enqueued.

Outputs: <output root>/<job id>/video.mp4 (clean; 720p with --sr), video_480p.mp4 (--keep-pre-sr),
video_hud.mp4 (--hud), trajectory.json, manifest.json, log.txt.
"""


def register(app: typer.Typer) -> None:
    app.command("generate", help=HELP)(generate)


def generate(
    prompt: Annotated[str, typer.Option("--prompt", "-p", help="What the world looks like.")] = "",
    image: Annotated[
        Optional[Path],
        typer.Option(
            "--image", "-i", help="Reference image, or a bundled example: meadow (default), city.", show_default=False
        ),
    ] = None,
    pose: Annotated[
        str, typer.Option("--pose", help="Pose string (e.g. 'w-15, right-16'), preset name, or trajectory file.")
    ] = "walk-and-turn",
    engine: Annotated[
        Optional[str], typer.Option(help="preview | native | official (default from settings).", show_default=False)
    ] = None,
    variant: Annotated[
        Optional[str], typer.Option(help=f"{' | '.join(variants.names())} (default from settings).", show_default=False)
    ] = None,
    frames: Annotated[
        Optional[int], typer.Option(help="Pixel frames; must match the trajectory (4·latents − 3).", show_default=False)
    ] = None,
    seed: Annotated[int, typer.Option(help="Random seed.")] = 1,
    steps: Annotated[
        Optional[int], typer.Option(help="Denoising steps (default: the variant's recipe).", show_default=False)
    ] = None,
    guidance: Annotated[
        Optional[float], typer.Option(help="Guidance scale (default: the variant's recipe).", show_default=False)
    ] = None,
    resolution: Annotated[str, typer.Option(help="Bucket class (480p); WAN: the frame size.")] = "480p",
    width: Annotated[
        Optional[int], typer.Option(help="Output width (multiple of 16; default from the image).", show_default=False)
    ] = None,
    height: Annotated[
        Optional[int], typer.Option(help="Output height (multiple of 16; default from the image).", show_default=False)
    ] = None,
    gpus: Annotated[int, typer.Option(help="GPUs per job (sequence parallel).")] = 1,
    name: Annotated[Optional[str], typer.Option("--name", help="A label for the output.", show_default=False)] = None,
    negative_prompt: Annotated[str, typer.Option(help="Negative prompt.")] = "",
    hud: Annotated[
        bool, typer.Option("--hud/--no-hud", help="Also write video_hud.mp4: the video with the keys drawn on.")
    ] = False,
    sr: Annotated[
        bool, typer.Option("--sr", help="Add the 720p super-resolution stage (native, official; up to 125 frames).")
    ] = False,
    keep_pre_sr: Annotated[
        bool, typer.Option("--keep-pre-sr", help="With --sr: keep the 480p video as video_480p.mp4.")
    ] = False,
    timeout: Annotated[
        Optional[int], typer.Option(help="Job timeout in seconds (default from settings).", show_default=False)
    ] = None,
    rewrite: RewriteOption = False,
    rewrite_required: RewriteRequiredOption = False,
    model_dir: Annotated[
        Optional[Path],
        typer.Option(
            help="Model directory on the worker host: its model_dir or one in its worker.model_dirs.",
            show_default=False,
        ),
    ] = None,
    memory_profile: Annotated[
        Optional[str],
        typer.Option(help="Native engine: auto | resident | offload | group-offload | low-vram.", show_default=False),
    ] = None,
    official_repo: Annotated[
        Optional[Path],
        typer.Option(
            help="Official engine: HY-WorldPlay checkout on the worker host, one in its worker.official_repos.",
            show_default=False,
        ),
    ] = None,
    sink_latents: SinkLatentsOption = None,
    local_window_latents: LocalWindowLatentsOption = None,
    compile: CompileOption = False,
    weights: WeightsOption = "default",
    attention_backend: AttentionBackendOption = "auto",
    queue: QueueOption = False,
    queue_name: QueueNameOption = None,
    wait: Annotated[bool, typer.Option("--wait", help="With --queue: follow the job until it ends.")] = False,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Print the resolved spec; enqueue nothing.")] = False,
    eval_after: Annotated[
        bool,
        typer.Option("--eval", help="With --queue: an eval job after this one (worldplay eval; fails if it fails)."),
    ] = False,
    prompts: Annotated[
        Optional[Path],
        typer.Option(
            "--prompts",
            help="A batch: one job per line of this file (a prompt, or a JSON object of options), the other options shared; implies --queue.",
            show_default=False,
        ),
    ] = None,
    as_json: JsonOption = False,
    config: ConfigOption = None,
    redis_url: RedisUrlOption = None,
    output_root: OutputRootOption = None,
) -> None:
    from worldplay_cli.contract.errors import BadInput
    from worldplay_cli.follow import run_foreground, wait_for_job
    from worldplay_cli.output import emit, err_console, warn
    from worldplay_cli.runtime import Runtime
    from worldplay_cli.submit import GenerateRequest, check_output_root, prepare, queue_warning, submit_generation

    on_queue = queued(queue, queue_name)
    if wait and not on_queue:
        raise BadInput("--wait only makes sense with --queue", "without --queue, generate already waits")
    if eval_after and not on_queue:
        raise BadInput("--eval adds a queue job after this one", "add --queue, or run `worldplay eval JOB` afterwards")
    policy = rewrite_policy(rewrite, rewrite_required)
    runtime = Runtime(config, redis_url, output_root)
    settings = runtime.settings
    # Each option is the request field of its name, except --name (output_name), --timeout (timeout_s) and
    # --rewrite/--rewrite-required (rewrite: the policy).
    request = GenerateRequest(
        prompt=prompt,
        image=image,
        pose=pose,
        engine=engine,
        variant=variant,
        frames=frames,
        seed=seed,
        steps=steps,
        guidance=guidance,
        resolution=resolution,
        width=width,
        height=height,
        gpus=gpus,
        output_name=name,
        negative_prompt=negative_prompt,
        timeout_s=timeout,
        hud=hud,
        sr=sr,
        keep_pre_sr=keep_pre_sr,
        rewrite=policy,
        model_dir=model_dir,
        memory_profile=memory_profile,
        official_repo=official_repo,
        compile=compile,
        weights=weights,
        attention_backend=attention_backend,
        sink_latents=sink_latents,
        local_window_latents=local_window_latents,
    )
    if prompts is not None:
        _prompts_batch(
            prompts, request, policy, prompt, wait, dry_run, queue_name, as_json, config, redis_url, output_root
        )
        return
    prepared = prepare(request, settings)
    if policy:
        prepared = prepared.with_rewrite(_rewrite(prepared, settings, policy))
    if dry_run:
        emit(prepared.spec.model_dump(mode="json"), as_json=True)
        return
    check_output_root(settings)  # before the connection: an unusable output root starts no Redis server
    if not on_queue:
        _print_outcome(run_foreground(runtime, prepared, show=not as_json), as_json)
        return
    submitted = submit_generation(prepared, settings, runtime.conn, queue_name, check_served=False)
    job_id, queue_name = submitted.job_id, submitted.queue
    # From here the job is the queue's: Ctrl+C (at any moment) stops only our following it.
    with _detach_on_ctrl_c(job_id):
        extra = {}
        if eval_after:
            from worldplay_cli.evaluate import submit_eval

            extra["eval_job_id"] = submit_eval(runtime.conn, settings, job_id, queue_name)
            if not as_json:
                err_console.print(f"eval job {extra['eval_job_id']} after it", highlight=False, soft_wrap=True)
        warning = queue_warning(runtime.conn, settings, queue_name)
        if not wait:
            warn(warning)
            emit(
                {"job_id": job_id, "queue": queue_name, "status": "queued", "warning": warning, **extra},
                as_json,
                lambda c: c.print(job_id),
            )
            return
        if not as_json:
            err_console.print(f"job {job_id} queued on {queue_name}", highlight=False, soft_wrap=True)
        warn(warning)
        _print_outcome(wait_for_job(runtime, job_id, queue_name, show=not as_json, warned=warning is not None), as_json)


def _prompts_batch(path, request, policy, prompt, wait, dry_run, queue_name, as_json, config, redis_url, output_root):
    """`--prompts FILE`: the request's options (as given) under every line of the file, as one batch."""
    from dataclasses import asdict

    from worldplay_cli.batch import prompts_batch
    from worldplay_cli.commands.batch import run_batch
    from worldplay_cli.contract.errors import BadInput
    from worldplay_cli.submit import GenerateRequest

    if policy or wait or prompt:
        raise BadInput("--prompts takes the prompts from the file", "drop --prompt, --rewrite and --wait")
    given = {key: value for key, value in asdict(request).items() if value != getattr(GenerateRequest, key, None)}
    given.pop("rewrite", None)
    run_batch(prompts_batch(path, given), dry_run, queue_name, as_json, config, redis_url, output_root)


def _rewrite(prepared, settings, policy):
    from worldplay_cli.contract.specs import RewriteRecord
    from worldplay_cli.output import err_console, warn
    from worldplay_cli.rewrite import rewrite_prompt

    image = prepared.spec.image
    result = rewrite_prompt(prepared.spec.prompt, Path(image.source) if image else None, settings, policy)
    if result.warning:
        warn(result.warning)
    elif result.changed:
        err_console.print(
            f"prompt rewritten by {result.model} ({result.prompt_version}): {result.rewritten}",
            highlight=False,
            markup=False,
        )
    return RewriteRecord(policy=policy, **result.model_dump())


def _print_outcome(outcome, as_json: bool) -> None:
    from worldplay_cli.output import emit

    result = outcome.result

    def render(console):
        console.print(
            f"[green]done[/] in {outcome.duration_s:.1f} s: {result.get('frames')} frames, "
            f"{result.get('width')}x{result.get('height')} @ {result.get('fps'):g} fps"
        )
        console.print(f"video: [bold]{result.get('video')}[/]", soft_wrap=True)

    emit(outcome.as_json(), as_json, render)


@contextmanager
def _detach_on_ctrl_c(job_id: str) -> Iterator[None]:
    from worldplay_cli.output import err_console

    try:
        yield
    except KeyboardInterrupt:
        err_console.print(
            f"detached; job {job_id} keeps going (follow it: worldplay jobs logs -f {job_id}; "
            f"stop it: worldplay jobs cancel {job_id})",
            highlight=False,
            soft_wrap=True,
        )
        raise typer.Exit(130) from None
