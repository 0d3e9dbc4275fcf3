"""`worldplay play`: a live, keyboard-driven world session in the terminal, or the replay of one."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from worldplay_cli.options import (
    ConfigOption,
    JsonOption,
    LocalWindowLatentsOption,
    OutputRootOption,
    QueueNameOption,
    QueueOption,
    RedisUrlOption,
    SinkLatentsOption,
)

HELP = (
    "Play a world live: W/A/S/D move, arrows turn, the model generates what you walk into.\n\n"
    "Runs the session on a worker of its own (started here), or with [bold]--queue[/] on the `play` queue served by "
    "`worldplay worker --queue play` on any host with the same Redis ([bold]--queue-name[/] picks another queue).\n\n"
    "A key counts as held while it was pressed within the last 0.4 s (terminals send presses, not releases; "
    "auto-repeat keeps a key held). Space holds still, p changes the prompt from the next chunk, r marks a recorded "
    "stretch, q ends the session. See docs/play.md.\n\n"
    "Outputs: <output root>/<job id>/video.mp4, trajectory.json, timeline.json, manifest.json, log.txt; "
    "[bold]--replay JOB[/] shows a finished session again."
)


def register(app: typer.Typer) -> None:
    app.command("play", help=HELP)(play)


def play(
    image: Annotated[
        Optional[Path],
        typer.Argument(
            help="Reference image, or a bundled example: meadow (default), city. None with --engine native and a "
            "WAN variant: text-to-video.",
            show_default=False,
        ),
    ] = None,
    prompt: Annotated[str, typer.Option("--prompt", help="What the world looks like.")] = "",
    engine: Annotated[
        Optional[str], typer.Option(help="preview | native (default from settings).", show_default=False)
    ] = None,
    variant: Annotated[
        Optional[str],
        typer.Option(
            help="An autoregressive variant: ar-distilled | ar | ar-rl (default from settings).", show_default=False
        ),
    ] = None,  # fmt: skip
    seed: Annotated[int, typer.Option(help="Random seed.")] = 1,
    graphics: Annotated[
        str, typer.Option(help="auto | kitty | sixel | halfblock: how frames are drawn (auto asks the terminal).")
    ] = "auto",
    ahead_chunks: Annotated[
        Optional[int],
        typer.Option(
            help="Chunks asked for ahead of the one on screen: 2 plays smoothly, 1 answers keys sooner (default 2).",
            show_default=False,
        ),
    ] = None,
    replay: Annotated[
        Optional[str],
        typer.Option("--replay", help="Show a finished session (job id, prefix or name).", show_default=False),
    ] = None,
    model_dir: Annotated[
        Optional[Path],
        typer.Option(help="Model directory on the worker host (native engine).", show_default=False),
    ] = None,
    sink_latents: SinkLatentsOption = None,
    local_window_latents: LocalWindowLatentsOption = None,
    queue: QueueOption = False,
    queue_name: QueueNameOption = None,
    as_json: JsonOption = False,
    config: ConfigOption = None,
    redis_url: RedisUrlOption = None,
    output_root: OutputRootOption = None,
) -> None:
    from worldplay_cli.contract.play import PLAY_QUEUE
    from worldplay_cli.options import queued
    from worldplay_cli.runtime import Runtime
    from worldplay_cli.submit import PlayRequest
    from worldplay_cli.tui.player.app import PlayerApp
    from worldplay_cli.tui.player.widgets import resolve_graphics

    mode = resolve_graphics(graphics)  # before Textual owns the terminal: only then can it be asked
    runtime = Runtime(config, redis_url, output_root)
    if replay is not None:
        app = PlayerApp(_replay_client(runtime, replay), graphics=mode)
        app.run()
    else:
        from worldplay_cli.tui.player.launch import start_session

        request = PlayRequest(prompt=prompt, image=image, engine=engine, variant=variant, seed=seed,
                              model_dir=model_dir, ahead_chunks=ahead_chunks, sink_latents=sink_latents,
                              local_window_latents=local_window_latents)  # fmt: skip
        session = start_session(runtime, request, (queue_name or PLAY_QUEUE) if queued(queue, queue_name) else None)
        app = PlayerApp(session.client, graphics=mode, queue=session.queue)
        try:
            app.run()
        finally:
            session.close()
    # an app closed another way than q (ctrl+q) returns nothing: what it knows then is the result
    _print_result(app.return_value or app.result(), as_json)


def _replay_client(runtime, text: str):
    from worldplay_cli import jobs
    from worldplay_cli.contract.errors import BadInput
    from worldplay_cli.contract.queue import job_dir
    from worldplay_cli.tui.player.client import ReplayClient

    directory = Path(text).expanduser()
    if not directory.is_dir():
        directory = Path(job_dir(runtime.settings, jobs.resolve_job_id(runtime.conn, text)))
    missing = [name for name in ("video.mp4", "timeline.json") if not (directory / name).is_file()]
    if missing:
        raise BadInput(
            f"{directory} has no {' or '.join(missing)}: not a finished play session",
            "list sessions with `worldplay jobs list`; a session's outputs are written when it ends",
        )
    try:
        return ReplayClient(directory)
    except ValueError as error:
        raise BadInput(f"cannot read the timeline of {directory}: {str(error).splitlines()[0]}") from None


def _print_result(result, as_json: bool) -> None:
    from dataclasses import asdict

    from worldplay_cli.contract.errors import WorldplayError
    from worldplay_cli.output import emit

    if result.status in ("failed", "lost"):
        where = f"; outputs up to the last complete chunk in {result.output_dir}" if result.output_dir else ""
        raise WorldplayError(f"session {result.job_id} {result.status}: {result.message}{where}", result.hint)

    def render(console) -> None:
        if result.status == "replayed":
            console.print(f"replayed {result.frames} frames of {result.output_dir}", highlight=False, soft_wrap=True)
            return
        if result.status == "left":
            console.print(f"{result.message}: session {result.job_id} ends; whatever it played is written to "
                          f"{result.output_dir}", highlight=False, soft_wrap=True)  # fmt: skip
            return
        console.print(
            f"session {result.job_id} ended ({result.reason}): {result.chunks} chunks, {result.frames} frames"
        )
        console.print(f"outputs: [bold]{result.output_dir}[/] (replay: worldplay play --replay {result.job_id})",
                      soft_wrap=True)  # fmt: skip

    emit(asdict(result), as_json, render)
