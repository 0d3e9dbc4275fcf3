"""`worldplay worker`: serve a queue with one worker process per GPU set."""

from __future__ import annotations

from typing import Annotated, Optional

import typer

from worldplay_cli.runtime import ConfigOption, OutputRootOption, RedisUrlOption

HELP = """Serve a queue: one worker process per GPU set, each listening on exactly one queue.

--gpus: sets separated by commas; a set is one id, a range or ids joined by '+'.
  0,1 → two workers with one GPU each;  0-3 → one worker with four GPUs;  0+1,2+3 → two with two.
Without --gpus, one worker uses whatever GPUs (or CPU) the environment gives it.

Ctrl+C / SIGTERM: workers stop taking jobs; a running job gets worker.shutdown_grace_s to finish and
is then stopped and re-queued. A second Ctrl+C does that at once.
"""


def register(app: typer.Typer) -> None:
    app.command("worker", help=HELP)(worker)


def worker(
    gpus: Annotated[Optional[str], typer.Option("--gpus", help="GPU sets, e.g. 0,1 or 0-3 or 0+1,2+3.", show_default=False)] = None,
    queue: Annotated[Optional[str], typer.Option("--queue", help="Queue to serve (default from settings).", show_default=False)] = None,
    burst: Annotated[bool, typer.Option("--burst", help="Exit when the queue is empty.")] = False,
    max_jobs: Annotated[Optional[int], typer.Option("--max-jobs", help="Exit after this many jobs.", show_default=False)] = None,
    config: ConfigOption = None,
    redis_url: RedisUrlOption = None,
    output_root: OutputRootOption = None,
) -> None:
    import signal
    import sys

    from worldplay_cli.output import err_console
    from worldplay_cli.runtime import Runtime, parse_gpu_sets
    from worldplay_cli.submit import check_output_root

    runtime = Runtime(config, redis_url, output_root)
    queue_name = queue or runtime.settings.queue.default_queue
    gpu_sets = parse_gpu_sets(gpus) or [()]
    check_output_root(runtime.settings)
    processes = [runtime.spawn_worker(queue_name, gpus=gpu_set, burst=burst, max_jobs=max_jobs) for gpu_set in gpu_sets]
    for gpu_set, process in zip(gpu_sets, processes):
        where = f"GPUs {'+'.join(map(str, gpu_set))}" if gpu_set else "default devices"
        err_console.print(f"worker pid {process.pid} on queue [bold]{queue_name}[/] ({where})")

    def forward(signum, frame):
        for process in processes:
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)

    signal.signal(signal.SIGINT, forward)
    signal.signal(signal.SIGTERM, forward)
    codes = [process.wait() for process in processes]
    sys.exit(next((code for code in codes if code), 0))
