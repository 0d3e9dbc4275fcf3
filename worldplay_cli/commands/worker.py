"""`worldplay worker`: serve a queue with one worker process per GPU set."""

from __future__ import annotations

from typing import Annotated, Optional

import typer

from worldplay_cli.options import ConfigOption, OutputRootOption, RedisUrlOption

HELP = """Serve a queue: one worker process per GPU set, each listening on exactly one queue.

--gpus: sets separated by commas; a set is one id, a range or ids joined by '+'.
  0,1 → two workers with one GPU each;  0-3 → one worker with four GPUs;  0+1,2+3 → two with two.
Without --gpus, one worker uses whatever GPUs (or CPU) the environment gives it.

Ctrl+C / SIGTERM: workers stop taking jobs; a running job gets worker.shutdown_grace_s to finish and
is then stopped and re-queued. A second Ctrl+C does that at once.

A worker process that dies (killed, out of memory, Redis gone for too long) is restarted, after 1 s,
then 2, 4 ... up to 60 s while it keeps dying within a minute of its start.
"""

# Restart delays for a worker that keeps dying soon after it started; one that ran HEALTHY_AFTER_S
# starts over at the first. Bounded, so a worker that cannot start (no Redis) does not spin.
RESTART_DELAYS_S = (1, 2, 4, 8, 16, 32, 60)
HEALTHY_AFTER_S = 60
POLL_S = 0.2


def register(app: typer.Typer) -> None:
    app.command("worker", help=HELP)(worker)


def worker(
    gpus: Annotated[
        Optional[str], typer.Option("--gpus", help="GPU sets, e.g. 0,1 or 0-3 or 0+1,2+3.", show_default=False)
    ] = None,
    queue: Annotated[
        Optional[str], typer.Option("--queue", help="Queue to serve (default from settings).", show_default=False)
    ] = None,
    burst: Annotated[bool, typer.Option("--burst", help="Exit when the queue is empty.")] = False,
    max_jobs: Annotated[
        Optional[int], typer.Option("--max-jobs", help="Exit after this many jobs.", show_default=False, min=1)
    ] = None,
    config: ConfigOption = None,
    redis_url: RedisUrlOption = None,
    output_root: OutputRootOption = None,
) -> None:
    import signal
    import sys
    import time

    from worldplay_cli.output import err_console
    from worldplay_cli.runtime import Runtime, parse_gpu_sets
    from worldplay_cli.submit import check_output_root

    if queue is not None:
        from worldplay_cli.contract.settings import check_queue_name

        check_queue_name(queue)
    runtime = Runtime(config, redis_url, output_root)
    queue_name = queue or runtime.settings.queue.default_queue
    gpu_sets = parse_gpu_sets(gpus) or [()]
    check_output_root(runtime.settings)
    runtime.conn  # an unreachable Redis is one line here (exit 1), before any worker process starts
    slots = [_Slot(gpu_set) for gpu_set in gpu_sets]
    stopping = False

    def start(slot: _Slot) -> None:
        slot.process = runtime.spawn_worker(queue_name, gpus=slot.gpus, burst=burst, max_jobs=max_jobs)
        slot.started = time.monotonic()
        err_console.print(f"worker pid {slot.process.pid} on queue [bold]{queue_name}[/] ({slot.where})")

    def forward(signum, frame):
        nonlocal stopping
        stopping = True
        for slot in slots:
            if slot.process is not None and slot.process.poll() is None:
                slot.process.send_signal(signal.SIGTERM)

    for slot in slots:
        start(slot)
    signal.signal(signal.SIGINT, forward)
    signal.signal(signal.SIGTERM, forward)
    while any(slot.code is None for slot in slots):
        for slot in slots:
            if slot.code is not None:
                continue
            if slot.process is None:  # waiting to be restarted
                if stopping:
                    slot.code = 0
                elif time.monotonic() >= slot.restart_at:
                    start(slot)
                continue
            code = slot.process.poll()
            if code is None:
                continue
            # Burst and --max-jobs workers end by themselves; any other end is a death.
            if stopping or ((burst or max_jobs is not None) and code == 0):
                slot.code = code
                continue
            slot.deaths = slot.deaths + 1 if time.monotonic() - slot.started < HEALTHY_AFTER_S else 1
            delay = RESTART_DELAYS_S[min(slot.deaths, len(RESTART_DELAYS_S)) - 1]
            how = f"was killed by signal {-code}" if code < 0 else f"exited with code {code}"
            err_console.print(
                f"worker pid {slot.process.pid} ({slot.where}) {how}; restarting it in {delay} s", highlight=False
            )
            slot.process, slot.restart_at = None, time.monotonic() + delay
        time.sleep(POLL_S)
    sys.exit(next((slot.code for slot in slots if slot.code), 0))


class _Slot:
    """One GPU set's worker process, restarted when it dies."""

    def __init__(self, gpus: tuple[int, ...]):
        self.gpus = gpus
        self.where = f"GPUs {'+'.join(map(str, gpus))}" if gpus else "default devices"
        self.process = None
        self.started = 0.0
        self.restart_at = 0.0
        self.deaths = 0
        self.code: int | None = None
