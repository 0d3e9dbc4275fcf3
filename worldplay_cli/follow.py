"""Following a generation job to its end, and running one in the foreground.

`worldplay generate --queue --wait` follows a job on a shared queue (`wait_for_job`); plain
`worldplay generate` runs one on a private queue with a one-job worker of its own (`run_foreground`).
Both show the job's log lines and a progress bar on stderr while they wait (nothing with `show=False`)
and return the finished job's `Outcome`, or raise `WorldplayError` for a job that did not finish.
"""

from __future__ import annotations

import os
import signal
import subprocess
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING

from worldplay_cli import jobs
from worldplay_cli.contract.errors import WorldplayError
from worldplay_cli.contract.meta import describe_progress

if TYPE_CHECKING:
    from redis import Redis

    from worldplay_cli.contract.play import PlaySpec
    from worldplay_cli.contract.settings import Settings
    from worldplay_cli.contract.specs import JobSpec
    from worldplay_cli.runtime import Runtime
    from worldplay_cli.submit import PreparedJob

# While a followed job waits on a shared queue, check this often that some worker still serves it.
SERVED_CHECK_S = 5.0


@dataclass(frozen=True)
class Outcome:
    """A finished job: its id, how long it ran, and its result (video, frames, width, height, fps, …)."""

    job_id: str
    status: str
    duration_s: float
    result: dict

    def as_json(self) -> dict:
        return {"job_id": self.job_id, "status": self.status, **self.result}


def wait_for_job(runtime: Runtime, job_id: str, queue_name: str, *, show: bool = True, warned: bool = False) -> Outcome:
    """Follow a job on a shared queue to its end. Ctrl+C (KeyboardInterrupt) stops only the following.

    `warned`: the caller already said that no worker serves `queue_name`; otherwise that is checked
    every `SERVED_CHECK_S` while the job waits, and said once."""
    return outcome(runtime, job_id, follow(runtime, job_id, None, show, queue_name, warned))


def run_foreground(runtime: Runtime, prepared: PreparedJob, *, show: bool = True) -> Outcome:
    """Run one job now: a private queue and a one-job worker for it, both cleaned up afterwards.

    Ctrl+C cancels the job (nobody else would run it) and raises WorldplayError."""
    from worldplay_cli.contract.specs import new_job_id
    from worldplay_cli.submit import submit_generation

    settings = runtime.settings
    job_id = new_job_id(prepared.spec.output_name)
    queue_name = f"local-{job_id}"
    submit_generation(
        prepared, settings, runtime.conn, queue_name, job_id=job_id, retries_on_lost=0, check_served=False
    )
    worker = runtime.spawn_worker(
        queue_name, burst=True, max_jobs=1, quiet=True, env_extra=own_paths_allowed(settings, prepared.spec)
    )
    try:
        try:
            row = follow(runtime, job_id, worker, show)
        except KeyboardInterrupt:
            status = jobs.cancel_job(runtime.conn, settings, job_id)
            raise WorldplayError(f"interrupted; job {job_id} is {status}") from None
        return outcome(runtime, job_id, row)
    finally:
        stop_worker(worker)
        forget_queue(runtime.conn, queue_name)


def own_paths_allowed(settings: Settings, spec: JobSpec | PlaySpec) -> dict[str, str]:
    """The foreground worker is this user's, for one job on a private queue: the model directory and
    checkout named on this command line are its owner's choice, so it may use them. A shared worker uses
    only what its owner configured (docs/queue-and-workers.md, "Trust model"). A session has no checkout."""
    env = {}
    official_repo = getattr(spec, "official_repo", None)
    for chosen, allowed, name in ((spec.model_dir, settings.worker.model_dirs, "MODEL_DIRS"),
                                  (official_repo, settings.worker.official_repos, "OFFICIAL_REPOS")):  # fmt: skip
        if chosen:
            env[f"WORLDPLAY_WORKER__{name}"] = os.pathsep.join([*map(str, allowed), chosen])
    return env


def outcome(runtime: Runtime, job_id: str, row: jobs.JobRow) -> Outcome:
    """The outcome of a job that ended; WorldplayError (with the failure's message and hint) unless it finished."""
    if row.status != "finished":
        failure = row.failure or {}
        raise WorldplayError(
            f"job {job_id} {row.status}: {failure.get('message', 'see `worldplay jobs show ' + job_id + '`')}",
            failure.get("hint") or f"worldplay jobs logs {job_id}",
        )
    detail = jobs.job_detail(runtime.conn, runtime.settings, job_id, log_lines=0)
    return Outcome(job_id, row.status, row.duration_s, detail["result"] or {})


def follow(runtime: Runtime, job_id: str, worker: subprocess.Popen | None, show: bool, queue_name: str | None = None,
           warned: bool = False) -> jobs.JobRow:  # fmt: skip
    """Poll the job until it ends, printing its new log lines and a progress bar (on a terminal) on stderr.

    `worker`: the private worker of a foreground run; its exiting before the job ended is an error."""
    from rich.progress import BarColumn, Progress, TaskProgressColumn, TextColumn

    from worldplay_cli.output import err_console, warn

    columns = (TextColumn("{task.description}"), BarColumn(), TaskProgressColumn(), TextColumn("{task.fields[detail]}"))
    last_log = "0-0"

    def print_new_log_lines() -> None:
        nonlocal last_log
        for last_log, line in jobs.read_log(runtime.conn, job_id, last_log):
            if show:
                err_console.print(line, style="dim", highlight=False, markup=False, soft_wrap=True)

    next_served_check = time.monotonic() + SERVED_CHECK_S
    # A bar only on a terminal; elsewhere (CI logs, pipes) just the log lines.
    with Progress(*columns, console=err_console, disable=not (show and err_console.is_terminal), transient=True) as bar:
        task = bar.add_task("queued", total=1.0, detail="")
        while True:
            row = jobs.get_row(runtime.conn, job_id)
            print_new_log_lines()
            if row.status in jobs.ENDED:
                print_new_log_lines()
                return row
            if queue_name and not warned and row.status == "queued" and time.monotonic() > next_served_check:
                next_served_check = time.monotonic() + SERVED_CHECK_S
                warning = jobs.unserved_queue_warning(runtime.conn, runtime.settings, queue_name)
                if warning and show:
                    warn(warning)
                warned = warning is not None
            progress = row.progress or {}
            detail = f"ETA {progress['eta_s']:.0f} s" if progress.get("eta_s") is not None else ""
            description = describe_progress(progress) or row.status
            bar.update(task, description=description, completed=progress.get("fraction", 0.0), detail=detail)
            if worker is not None and worker.poll() is not None and row.status in jobs.ACTIVE:
                raise WorldplayError(f"the worker for job {job_id} exited ({worker.returncode}) before the job ended")
            time.sleep(0.2)


def stop_worker(worker: subprocess.Popen) -> None:
    if worker.poll() is None:
        worker.send_signal(signal.SIGTERM)
    try:
        worker.wait(timeout=30)
    except subprocess.TimeoutExpired:
        worker.kill()
        worker.wait()


def forget_queue(conn: Redis, queue_name: str) -> None:
    from worldplay_cli.contract.queue import rq_queue
    from worldplay_cli.contract.specs import QUEUES_SET

    rq_queue(conn, queue_name).delete(delete_jobs=False)
    conn.srem(QUEUES_SET, queue_name)
