"""The work horse's side of the resident runtime: find (or start) this worker's supervisor and talk to it.

One supervisor per rq worker process, keyed by that process's pid (the horse's parent): its socket is
`<runtime dir>/resident-<pid>.sock`, its logs and the rank logs are in `<runtime dir>/resident-<pid>/`.
It is started without the job's process marker and in its own session, so ending a job's processes
(cancel, timeout) leaves the resident ranks alone; it stops by itself when the rq worker is gone.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

from worker import proctree
from worker.runtime.protocol import Connection
from worldplay_cli.contract.settings import runtime_dir

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
