"""`python -m worker.runtime.supervisor --socket PATH --owner PID`: the keeper of one worker's resident ranks.

Started on demand by the first resident job of an rq worker (see `client`), it outlives the per-job work
horses and ends when its owner, the rq worker process, is gone. It owns a group of rank processes
(`worker.runtime.rank`, torchrun-style) that keep the model loaded, serves one job at a time from the
horses that connect to its socket, and relays the job's events back.

Supervision (checked every `POLL_S`):
- a rank that exits, at any time, tears the whole group down (SIGTERM, grace, SIGKILL). A job in flight
  fails with the rank and its exit status as the reason; a fresh group is started at once, so the worker
  is healthy for the next job. Collective timeouts only matter for a rank that hangs while alive.
- an out-of-memory error is retried once, in a fresh group, one memory profile further down the ladder
  (not a live session's: it fails with the hint).
- a job the ranks refuse (`"fatal": false`: a bad request, an unusable model directory) fails alone;
  the group stays up, with whatever it has loaded.
- a horse that goes away (cancel, timeout, kill) cancels the job at the next denoising step; if the
  ranks do not confirm within `cancel_grace_s`, the group is torn down and restarted.
- what a horse sends while its job runs (a live session's chunk requests and its end) is relayed to
  rank 0 as it comes.
"""

from __future__ import annotations

import argparse
import os
import re
import select
import signal
import sys
import time
from pathlib import Path

import psutil

from worker.parallel.launch import spawn_ranks, stop_ranks
from worker.runtime.memory_profiles import next_profile
from worker.runtime.protocol import Connection, ConnectionClosed, listen

POLL_S = 0.2
_ERROR_LINE = re.compile(r"^((?:[\w.]+\.)?\w*(?:Error|Exception)\b.*)$")


class GroupFailed(Exception):
    pass


def _log(line: str) -> None:
    print(f"{time.strftime('%Y-%m-%d %H:%M:%S')} supervisor[{os.getpid()}]: {line}", flush=True)


class Group:
    """Rank processes started together; rank 0 connected over the control socket."""

    def __init__(
        self,
        nproc: int,
        control_listener,
        control_path: Path,
        log_dir: Path,
        collective_timeout_s: float,
        start_timeout_s: float,
    ):
        self.nproc = nproc
        self.log_dir = log_dir
        command = [
            "-m",
            "worker.runtime.rank",
            "--control",
            str(control_path),
            "--collective-timeout",
            str(collective_timeout_s),
        ]
        self.processes = spawn_ranks(command, nproc, log_dir=log_dir)
        self.control: Connection | None = None
        deadline = time.monotonic() + start_timeout_s
        try:
            while self.control is None:
                self._check_alive(deadline)
                if select.select([control_listener], [], [], POLL_S)[0]:
                    self.control = Connection(control_listener.accept()[0])
            while (message := self.control.receive(POLL_S)) is None:
                self._check_alive(deadline)
        except (GroupFailed, ConnectionClosed) as error:
            self.stop(grace_s=2)
            raise GroupFailed(f"the rank group did not start: {error}") from None
        self.device = message.get("device")

    def _check_alive(self, deadline: float) -> None:
        dead = self.dead_rank()
        if dead:
            raise GroupFailed(dead)
        if time.monotonic() > deadline:
            raise GroupFailed("timed out waiting for the ranks to join")

    @property
    def pids(self) -> list[int]:
        return [process.pid for process in self.processes]

    def dead_rank(self, skip: int | None = None) -> str | None:
        """Why a rank is gone ('rank 1 of 2 was killed by SIGKILL'), or None while all live."""
        for rank, process in enumerate(self.processes):
            code = process.poll()
            if code is None or rank == skip:
                continue
            how = f"was killed by {signal.Signals(-code).name}" if code < 0 else f"exited with code {code}"
            reason = f"rank {rank} of {self.nproc} {how}"
            error = self._last_error(rank)
            return f"{reason} ({error})" if error else reason
        return None

    def _last_error(self, rank: int) -> str | None:
        try:
            lines = (self.log_dir / f"rank{rank}.log").read_text(errors="replace").splitlines()[-40:]
        except OSError:
            return None
        errors = [match.group(1) for line in lines if (match := _ERROR_LINE.match(line.strip()))]
        return errors[-1] if errors else None

    def stop(self, grace_s: float) -> None:
        if self.control is not None:
            try:
                self.control.send({"type": "stop"})
            except ConnectionClosed:
                pass
        stop_ranks(self.processes, grace_s)
        if self.control is not None:
            self.control.close()


class Supervisor:
    def __init__(
        self, socket_path: Path, owner: int, collective_timeout_s: float, start_timeout_s: float, cancel_grace_s: float
    ):
        self.socket_path = socket_path
        self.control_path = socket_path.with_suffix(".ctl")
        self.log_dir = socket_path.with_suffix("")
        self.log_dir.mkdir(exist_ok=True)
        self.owner = owner
        self.collective_timeout_s = collective_timeout_s
        self.start_timeout_s = start_timeout_s
        self.cancel_grace_s = cancel_grace_s
        self.listener = listen(socket_path)
        self.control_listener = listen(self.control_path)
        self.group: Group | None = None
        self.loads = 0
        self.groups_started = 0

    def owner_alive(self) -> bool:
        try:
            return psutil.Process(self.owner).status() != psutil.STATUS_ZOMBIE
        except psutil.NoSuchProcess:
            return False

    # -- the group --------------------------------------------------------------------------------------

    def start_group(self, nproc: int) -> Group:
        self.group = Group(
            nproc,
            self.control_listener,
            self.control_path,
            self.log_dir,
            self.collective_timeout_s,
            self.start_timeout_s,
        )
        self.groups_started += 1
        (self.log_dir / "group.txt").write_text(" ".join(map(str, self.group.pids)) + "\n")
        _log(
            f"group {self.groups_started} started: {nproc} rank(s), pids {self.group.pids}, device {self.group.device}"
        )
        return self.group

    def teardown(self, why: str) -> None:
        if self.group is None:
            return
        _log(f"tearing the group down: {why}")
        self.group.stop(grace_s=5)
        self.group = None

    # -- serving ----------------------------------------------------------------------------------------

    def serve(self) -> None:
        _log(f"serving {self.socket_path} for worker pid {self.owner}")
        try:
            while self.owner_alive():
                if self.group is not None and (dead := self.group.dead_rank()):
                    nproc = self.group.nproc
                    self.teardown(f"{dead} while idle")
                    self._restart(nproc)
                if select.select([self.listener], [], [], 0.5)[0]:
                    client = Connection(self.listener.accept()[0])
                    try:
                        self.handle(client)
                    finally:
                        client.close()
            _log("the worker that owns this supervisor is gone; stopping")
        finally:
            self.teardown("supervisor stopping")
            self.socket_path.unlink(missing_ok=True)
            self.control_path.unlink(missing_ok=True)

    def _restart(self, nproc: int) -> None:
        try:
            self.start_group(nproc)
        except GroupFailed as error:
            _log(f"could not restart the group: {error}")

    def handle(self, client: Connection) -> None:
        try:
            job = client.receive(30)
        except ConnectionClosed:
            return
        if job is None or job.get("type") != "job":
            return
        profile, retried_from = job["profile"], None
        for attempt in (1, 2):
            if self.group is None or self.group.nproc != job["nproc"]:
                self.teardown(f"the job needs {job['nproc']} rank(s)")
                try:
                    self.start_group(job["nproc"])
                except GroupFailed as error:
                    self._tell(
                        client,
                        {
                            "type": "error",
                            "kind": "engine_error",
                            "message": str(error),
                            "hint": "see the worker's resident logs",
                        },
                    )
                    return
            self.group.control.send({**job, "profile": profile, "retried_from": retried_from, "attempt": attempt})
            outcome = self.relay(client)
            if outcome["type"] in ("result", "canceled") or outcome.get("fatal") is False:
                self._tell(client, outcome)
                return
            nproc = self.group.nproc
            self.teardown(outcome["message"])
            following = (
                next_profile(outcome["profile"]) if outcome.get("kind") == "oom" and outcome.get("profile") else None
            )
            # a live session is not re-run: its stream and its horse's place in it died with the group
            if attempt == 1 and following and job.get("kind") != "play":
                line = f"resident: {outcome['message']} under memory profile {outcome['profile']}; retrying once with {following} in fresh processes"
                _log(line)
                self._tell(client, {"type": "log", "line": line})
                profile, retried_from = following, outcome["profile"]
                continue
            self._tell(client, outcome)
            self._restart(nproc)
            return

    def relay(self, client: Connection) -> dict:
        """Forward rank 0's events to the client until the job ends; returns the final message."""
        group = self.group
        client_open = True
        cancel_deadline: float | None = None
        while True:
            dead = group.dead_rank()
            if dead:
                return {"type": "error", "kind": "engine_error", "message": f"{dead} during the job; the rank group was restarted",
                        "hint": "the job can be retried; see the worker's resident logs if it keeps happening"}  # fmt: skip
            if not self.owner_alive():
                return {"type": "error", "kind": "worker_lost", "message": "the worker stopped during the job"}
            if cancel_deadline is not None and time.monotonic() > cancel_deadline:
                return {"type": "error", "kind": "canceled", "message": "the ranks did not stop in time after a cancel"}
            watched = [group.control.sock] + ([client.sock] if client_open else [])
            readable, _, _ = select.select(watched, [], [], POLL_S)
            if client_open and client.sock in readable:
                try:
                    # requests of a job in flight (a live session's chunks and its end) go to rank 0
                    for request in client.receive_available():
                        group.control.send(request)
                except ConnectionClosed:
                    client_open = False
                    cancel_deadline = time.monotonic() + self.cancel_grace_s
                    _log("the job's work horse went away; canceling the job")
                    group.control.send({"type": "cancel"})
            if group.control.sock not in readable:
                continue
            try:
                messages = group.control.receive_available()
            except ConnectionClosed:
                deadline = time.monotonic() + 5
                while group.dead_rank() is None and time.monotonic() < deadline:
                    time.sleep(POLL_S)
                reason = group.dead_rank() or "rank 0 closed its control connection"
                return {
                    "type": "error",
                    "kind": "engine_error",
                    "message": f"{reason} during the job; the rank group was restarted",
                }
            for message in messages:
                if message["type"] == "loaded":
                    self.loads += 1
                    _log(f"load #{self.loads} of this worker: {message['variant']} in {message['load_s']:.1f} s")
                    continue
                if message["type"] == "error" and message["kind"] != "oom" and message.get("fatal", True):
                    return self._root_cause(message)
                if message["type"] in ("result", "canceled", "error"):
                    if message["type"] == "result":
                        message["info"]["resident"].update(loads_in_worker=self.loads, group=self.groups_started)
                    return message
                if client_open:
                    self._tell(client, message)

    def _root_cause(self, error: dict) -> dict:
        """Rank 0's error is often a broken collective: if another rank died meanwhile, that is the reason."""
        deadline = time.monotonic() + 2
        while time.monotonic() < deadline:
            other = self.group.dead_rank(skip=0)
            if other:
                return {**error, "message": f"{other} during the job; the rank group was restarted",
                        "detail": error["message"]}  # fmt: skip
            time.sleep(POLL_S)
        return error

    @staticmethod
    def _tell(client: Connection, message: dict) -> None:
        try:
            client.send(message)
        except ConnectionClosed:
            pass


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m worker.runtime.supervisor", description=__doc__.splitlines()[0])
    parser.add_argument("--socket", type=Path, required=True)
    parser.add_argument("--owner", type=int, required=True, help="pid of the worker process this serves")
    parser.add_argument("--collective-timeout", type=float, default=300.0)
    parser.add_argument("--start-timeout", type=float, default=300.0)
    parser.add_argument("--cancel-grace", type=float, default=30.0)
    args = parser.parse_args(argv)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    supervisor = Supervisor(args.socket, args.owner, args.collective_timeout, args.start_timeout, args.cancel_grace)
    supervisor.serve()
    return 0


if __name__ == "__main__":
    sys.exit(main())
