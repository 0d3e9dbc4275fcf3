"""The work horse's side of the resident runtime: find (or start) this worker's supervisor and talk to it.

One supervisor per rq worker process, keyed by that process's pid (the horse's parent): its socket is
`<runtime dir>/resident-<pid>.sock`, its logs and the rank logs are in `<runtime dir>/resident-<pid>/`.
It is started without the job's process marker and in its own session, so ending a job's processes
(cancel, timeout) leaves the resident ranks alone; it stops by itself when the rq worker is gone.

`ResidentJob` is one job's conversation with it, the same for a generation (`worker.engines.native`) and a
live session (`worker.play.native`): send the job and any requests, wait for an answer while relaying the
ranks' stages, progress and log lines to the job's reporter and watching for a cancel.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING

from worker import proctree
from worker.job import JobFailed
from worker.progress import JobCanceled
from worker.runtime.protocol import Connection, ConnectionClosed
from worldplay_cli.contract.settings import runtime_dir
from worldplay_cli.contract.specs import Failure

if TYPE_CHECKING:
    from worker.progress import Reporter

START_TIMEOUT_S = 60.0


def socket_path(owner: int) -> Path:
    return runtime_dir() / f"resident-{owner}.sock"


def log_dir(owner: int) -> Path:
    return runtime_dir() / f"resident-{owner}"


def connect(owner: int, supervisor_args: tuple[str, ...] = ()) -> Connection:
    """A connection to the supervisor serving `owner`, started first if none is listening."""
    path = socket_path(owner)
    try:
        return Connection.connect(path)
    except OSError:
        pass
    start_supervisor(owner, supervisor_args)
    deadline = time.monotonic() + START_TIMEOUT_S
    while True:
        try:
            return Connection.connect(path)
        except OSError:
            if time.monotonic() > deadline:
                raise RuntimeError(
                    f"the resident supervisor did not come up; see {log_dir(owner) / 'supervisor.log'}"
                ) from None
            time.sleep(0.1)


def start_supervisor(owner: int, extra_args: tuple[str, ...] = ()) -> subprocess.Popen:
    directory = log_dir(owner)
    directory.mkdir(exist_ok=True)
    env = {name: value for name, value in os.environ.items() if name != proctree.MARKER_ENV}
    command = [
        sys.executable,
        "-m",
        "worker.runtime.supervisor",
        "--socket",
        str(socket_path(owner)),
        "--owner",
        str(owner),
        *extra_args,
    ]
    with open(directory / "supervisor.log", "ab") as log:
        return subprocess.Popen(
            command, env=env, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True
        )


class ResidentJob:
    """One job handed to the resident group of worker process `owner`; closing it (also on cancel or any
    error) tells the supervisor to cancel whatever the ranks still do for it."""

    def __init__(self, owner: int, reporter: Reporter, poll_s: float = 0.5):
        self.owner = owner
        self.reporter = reporter
        self.poll_s = poll_s
        self.connection = connect(owner)

    def send(self, message: dict) -> None:
        try:
            self.connection.send(message)
        except ConnectionClosed:
            raise self._gone() from None

    def wait(self, *answers: str, timeout_s: float | None = None) -> dict:
        """The next message of a type in `answers`; the events before it go to the reporter. Raises
        `JobCanceled` (the user's cancel, or the ranks confirming one), `JobFailed` (the ranks' error, the
        supervisor gone) or `TimeoutError` after `timeout_s`."""
        deadline = None if timeout_s is None else time.monotonic() + timeout_s
        try:
            while True:
                message = self.connection.receive(self.poll_s)
                if message is None:
                    if deadline is not None and time.monotonic() > deadline:
                        raise TimeoutError(f"no {' or '.join(answers)} from the resident group in {timeout_s:.0f} s")
                    self.reporter.check_cancel()
                    continue
                kind = message["type"]
                if kind in answers:
                    return message
                if kind == "stage":
                    self.reporter.stage(message["name"])
                elif kind == "progress":
                    self.reporter.update(
                        message["done"], message["total"], chunk=message["chunk"], num_chunks=message["num_chunks"]
                    )
                elif kind == "log":
                    self.reporter.log(message["line"])
                elif kind == "canceled":
                    raise JobCanceled("canceled by the user")
                elif kind == "error":
                    raise JobFailed(Failure(kind=message["kind"], message=message["message"], hint=message.get("hint")))
        except ConnectionClosed:
            raise self._gone() from None

    def _gone(self) -> JobFailed:
        return JobFailed(
            Failure(
                kind="engine_error",
                message="the resident supervisor went away during the job",
                hint=f"see {log_dir(self.owner)}",
            )
        )

    def close(self) -> None:
        self.connection.close()

    def __enter__(self) -> ResidentJob:
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()
